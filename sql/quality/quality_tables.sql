-- Data-quality gate tables (tasks/quality.py). Idempotent (if not exists). The gate's per-run
-- results: quality.dq_results (one row per expectation), quality.table_status (one row per
-- validated table), quality.source_status (one row per source kind; scores and write-back read it).
create schema if not exists quality;

alter table quality.dq_results add column if not exists layer varchar;
alter table quality.dq_results add column if not exists description varchar;
alter table quality.dq_results add column if not exists details varchar[];

create table if not exists quality.table_status (
    run_id varchar not null,
    layer varchar not null,
    table_name varchar not null,
    suite_name varchar not null,
    source_kind varchar,
    verdict varchar not null,
    rows_in bigint not null,
    rows_accepted bigint not null,
    rows_quarantined bigint not null,
    failed varchar[] not null,
    reason varchar,
    seconds double,
    validated_at timestamptz not null
);
comment on table quality.table_status is
'grain: one row per run x validated table (raw, staging, intermediate, marts); key: '
'(run_id, table_name). The verdict of its suite and the row accounting.';

create table if not exists quality.schema_profile (
    run_id varchar not null,
    raw_table varchar not null,
    field varchar not null,
    n_records bigint not null,
    n_present bigint not null,
    n_nonnull bigint not null,
    json_type varchar,
    type_share double,
    profiled_at timestamptz not null
);
comment on table quality.schema_profile is
'grain: one row per run x raw table x top-level field of the records loaded in that run (a '
'sample of at most 50,000); key: (run_id, raw_table, field). Typed raw tables list their '
'columns and the keys of their JSON object columns (properties.<key>).';

create table if not exists quality.schema_baseline (
    raw_table varchar not null,
    field varchar not null,
    n_records bigint not null,
    n_present bigint not null,
    n_nonnull bigint not null,
    json_type varchar,
    first_run_id varchar not null,
    last_run_id varchar not null,
    updated_at timestamptz not null
);
comment on table quality.schema_baseline is
'grain: one row per raw table x accepted top-level field; key: (raw_table, field). Seeded by the '
'first delivery, then every profile without critical drift is folded in (new fields included).';

create table if not exists quality.schema_drift (
    raw_table varchar,
    field varchar,
    change varchar,
    baseline_presence double,
    current_presence double,
    baseline_type varchar,
    current_type varchar,
    n_records bigint,
    profile_run_id varchar,
    detail varchar
);

create table if not exists quality.volume_daily (
    table_name varchar,
    source varchar,
    day date,
    n_rows bigint,
    n_duplicate_content bigint,
    n_baseline_days bigint,
    baseline_median double,
    detail varchar
);

create table if not exists quality.validation_state (
    table_name varchar not null,
    suite_name varchar not null,
    suite_hash varchar not null,
    watermark timestamptz,
    newest_record_at timestamptz,
    run_id varchar not null,
    updated_at timestamptz not null
);
comment on table quality.validation_state is
'grain: one row per validated raw or staging table; key: table_name. What its last stored '
'validation covered: the newest _loaded_at of the raw rows judged (the next run validates only '
'rows loaded or updated after it), the suite content hash it was judged with (a changed suite '
'validates everything again) and the newest record time so far (freshness). Advanced in the '
'transaction that stores the results.';

create table if not exists quality.validation_batches (
    run_id varchar not null,
    table_name varchar not null,
    suite_name varchar not null,
    mode varchar not null,
    reason varchar,
    since timestamptz,
    watermark timestamptz,
    rows_in bigint not null,
    newest_record_at timestamptz,
    suite_hash varchar not null,
    created_at timestamptz not null
);
comment on table quality.validation_batches is
'grain: one row per run x validated raw or staging table; key: (run_id, table_name). The batch '
'the run validated: mode full (first run, changed suite, --full-refresh) or incremental (rows '
'loaded after since, up to watermark), its rows and the newest record so far (read by the '
'freshness rules).';

create table if not exists quality.volume_rows (
    table_name varchar not null,
    source varchar,
    key_hash ubigint not null,
    happened_at timestamptz,
    content_hash ubigint
);
comment on table quality.volume_rows is
'grain: one row per row of a volume-checked staging table (before validation); key: '
'(table_name, key_hash). Narrow per-row index (hash of the key, the record time, a content '
'hash) kept up to date from each validated batch, so quality.volume_daily counts the checked '
'window without re-reading every event. Not in the analyst snapshot (it grows with history).';

create table if not exists quality.volume_day_counts (
    table_name varchar not null,
    source varchar,
    day date not null,
    n_rows bigint not null,
    n_duplicate_content bigint not null
);
comment on table quality.volume_day_counts is
'grain: one row per volume-checked staging table x source x day with rows; key: (table_name, '
'source, day). Rows and repeated content per record day, rolled up from quality.volume_rows '
'for the days each validated batch touched, so quality.volume_daily reads days, not rows.';
