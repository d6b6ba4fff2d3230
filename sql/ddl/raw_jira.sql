-- Written by `make generated` (tasks/generated.py) from the declaration of jira in
-- tasks/clients/jira.py: edit that, not this file. Idempotent.
create schema if not exists raw;

create table if not exists raw.jira__issues (
    issue_id varchar not null,
    cursor_at varchar,
    payload json not null,
    _source_file varchar,
    _batch_id varchar not null,
    _loaded_at timestamptz not null
);
comment on table raw.jira__issues is
'grain: one row per Jira issue; key: issue_id (numeric id as text, stable across project moves, '
'unlike the issue key). Merged on issue_id, latest fields.updated wins.';
