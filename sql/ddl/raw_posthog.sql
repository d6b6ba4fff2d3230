-- Written by `make generated` (tasks/generated.py) from the declaration of posthog in
-- tasks/clients/posthog.py: edit that, not this file. Idempotent.
create schema if not exists raw;

create table if not exists raw.posthog__events (
    event_id varchar not null,
    event varchar,
    distinct_id varchar,
    event_time json,
    properties json,
    cursor_at varchar,
    _source_file varchar,
    _batch_id varchar not null,
    _loaded_at timestamptz not null
);
comment on table raw.posthog__events is
'grain: one row per PostHog event; key: event_id (uuid). The record''s top-level fields as typed '
'columns (the high-volume path); merged on event_id, a changed record wins.';

-- Its full history (warehouse rows, plus Parquet day files in the parquet store; tasks/rawstore.py).
create view if not exists raw.posthog__events_all as select * from raw.posthog__events;
