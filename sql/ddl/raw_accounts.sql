-- Written by `make generated` (tasks/generated.py) from the declaration of accounts in
-- tasks/sources.py: edit that, not this file. Idempotent.
create schema if not exists raw;

create table if not exists raw.accounts__accounts (
    account_key varchar not null,
    cursor_at varchar,
    payload json not null,
    _source_file varchar,
    _batch_id varchar not null,
    _loaded_at timestamptz not null
);
comment on table raw.accounts__accounts is
'grain: one row per account; key: account_key (as the usage events carry it). Merged on '
'account_key, the newest file wins (cursor_at = the file''s modification time). payload: the known '
'columns (arr a number); name is kept here and in staging only.';
