-- Written by `make generated` (tasks/generated.py) from the declaration of linear in
-- tasks/clients/linear.py: edit that, not this file. Idempotent.
create schema if not exists raw;

create table if not exists raw.linear__issues (
    issue_id varchar not null,
    cursor_at varchar,
    payload json not null,
    _source_file varchar,
    _batch_id varchar not null,
    _loaded_at timestamptz not null
);
comment on table raw.linear__issues is
'grain: one row per Linear issue (archived included); key: issue_id (UUID, stable across team '
'moves, unlike the identifier). Merged on issue_id, latest updatedAt wins.';
