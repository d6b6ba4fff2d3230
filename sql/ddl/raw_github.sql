-- Written by `make generated` (tasks/generated.py) from the declaration of github in
-- tasks/clients/github.py: edit that, not this file. Idempotent.
create schema if not exists raw;

create table if not exists raw.github__issues (
    node_id varchar not null,
    cursor_at varchar,
    payload json not null,
    _source_file varchar,
    _batch_id varchar not null,
    _loaded_at timestamptz not null
);
comment on table raw.github__issues is
'grain: one row per GitHub issue (pull requests dropped); key: node_id. Latest updated_at wins.';
