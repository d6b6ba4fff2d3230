-- Written by `make generated` (tasks/generated.py) from the declaration of sentry in
-- tasks/clients/sentry.py: edit that, not this file. Idempotent.
create schema if not exists raw;

create table if not exists raw.sentry__issues (
    issue_id varchar not null,
    cursor_at varchar,
    payload json not null,
    _source_file varchar,
    _batch_id varchar not null,
    _loaded_at timestamptz not null
);
comment on table raw.sentry__issues is
'grain: one row per Sentry issue (error group); key: issue_id. Merged on issue_id; the latest read '
'wins (lastSeen, then payload), so counts are as of _loaded_at.';
