-- Raw landing table for Sentry issues (tasks/clients/sentry.py). Idempotent (if not exists).
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
'grain: one row per Sentry issue (error group); key: issue_id. Merged on issue_id; the latest '
'read wins (lastSeen, then payload), so counts are as of _loaded_at.';
