-- Warehouse contract: schemas and the tables every run writes into. Idempotent (if not exists).
-- The raw tables are in sql/ddl/raw_<vendor>.sql, written from the vendors' declarations.
create schema if not exists raw;
create schema if not exists staging;
create schema if not exists intermediate;
create schema if not exists quality;
create schema if not exists marts;
create schema if not exists ops;

create table if not exists quality.quarantine (
    quarantine_id varchar not null,
    stage varchar not null,
    source varchar not null,
    table_name varchar not null,
    record_key varchar,
    rule varchar not null,
    reason varchar not null,
    payload varchar,
    source_file varchar,
    first_run_id varchar not null,
    last_run_id varchar not null,
    quarantined_at timestamptz not null
);
comment on table quality.quarantine is
'grain: one row per rejected record and rule; key: quarantine_id (hash of table, rule, key, payload).';

create table if not exists quality.dq_results (
    run_id varchar not null,
    table_name varchar not null,
    source varchar not null,
    suite_name varchar not null,
    expectation_type varchar not null,
    column_name varchar,
    kwargs json,
    severity varchar not null,
    is_success boolean not null,
    element_count bigint,
    unexpected_count bigint,
    unexpected_percent double,
    n_quarantined bigint not null,
    observed_value varchar,
    validated_at timestamptz not null
);
comment on table quality.dq_results is
'grain: one row per run x table x expectation; key: (run_id, table_name, expectation_type, column_name, kwargs).';

create table if not exists ops.sync_state (
    source varchar not null,
    stream varchar not null,
    cursor_value varchar,
    n_files bigint,
    updated_at timestamptz not null,
    run_id varchar not null
);
comment on table ops.sync_state is
'grain: one row per source stream; key: (source, stream). Advanced in the same transaction as the data.';

create table if not exists ops.loaded_files (
    source varchar not null,
    path varchar not null,
    size_bytes bigint not null,
    mtime_ns bigint not null,
    n_records bigint not null,
    n_quarantined bigint not null,
    batch_id varchar not null,
    loaded_at timestamptz not null
);
comment on table ops.loaded_files is
'grain: one row per source file version loaded; key: (source, path). Unchanged files are skipped.';

create table if not exists ops.runs (
    run_id varchar not null,
    flow_run_id varchar,
    started_at timestamptz not null,
    finished_at timestamptz,
    as_of_date date,
    window_days integer,
    status varchar not null,
    dq_verdict varchar,
    is_dry_run boolean,
    summary json
);
comment on table ops.runs is
'grain: one row per run of the nightly or backfill flow (kind says which); key: run_id. status: '
'running, completed, degraded, failed, or abandoned (the run died before finishing its row; '
'marked by the next run). '
'stage_seconds and row_counts: per-stage timings and loaded/staged row counts.';
alter table ops.runs add column if not exists stage_seconds json;
alter table ops.runs add column if not exists row_counts json;

create table if not exists ops.writeback_ledger (
    fingerprint varchar not null,
    tracker varchar not null,
    issue_ref varchar,
    url varchar,
    state varchar not null,
    state_reason varchar,
    title varchar,
    content_hash varchar,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    last_run_id varchar not null
);
comment on table ops.writeback_ledger is
'grain: one row per problem fingerprint (health:<feature>, adoption:<feature>) and tracker; '
'key: (fingerprint, tracker). Written pending before the tracker call, completed after. Rows of '
'legacy per-kind fingerprints are carried over, or kept with state merged.';

create table if not exists quality.source_status (
    run_id varchar not null,
    source_kind varchar not null,
    table_name varchar not null,
    verdict varchar not null,
    confidence_factor double not null,
    is_writeback_blocked boolean not null,
    reason varchar
);
comment on table quality.source_status is
'grain: one row per run x source kind (usage, tickets, bugs); key: (run_id, source_kind). '
'The data-quality verdict that scores and write-back depend on.';

-- Added after the first release: what a "material change" (worth a comment) is judged against.
alter table ops.writeback_ledger add column if not exists summary json;

-- Added with "one problem, one issue": the kind last written (a change retitles the issue with
-- one comment), a close made by the loop itself (recovery; reopened when the problem returns),
-- the canonical problem a legacy duplicate was merged into, and the team's effort estimate as
-- the tracker holds it (label effort:N, front matter, story points, estimate).
alter table ops.writeback_ledger add column if not exists kind varchar;
alter table ops.writeback_ledger add column if not exists closed_by varchar;
alter table ops.writeback_ledger add column if not exists closed_at timestamptz;
alter table ops.writeback_ledger add column if not exists merged_into varchar;
alter table ops.writeback_ledger add column if not exists effort double;
alter table ops.writeback_ledger add column if not exists effort_source varchar;

-- Added with screening of bad input (tasks/load/): a file set aside whole is recorded as
-- rejected (with the rule and its sha256) so it is not read again until it changes.
alter table ops.loaded_files add column if not exists status varchar default 'loaded';
alter table ops.loaded_files add column if not exists reject_rule varchar;
alter table ops.loaded_files add column if not exists sha256 varchar;

-- Added with backfills (flows/backfill.py): which flow and trigger made the row. A backfill's
-- as_of_date is the last day it scored; its summary lists every day.
alter table ops.runs add column if not exists kind varchar;

-- The full history of each raw event table (tasks/rawstore.py): in the "warehouse" store just its
-- rows; in the "parquet" store re-created as its rows UNION ALL its Parquet day files. Staging
-- reads these views. `if not exists`: a view over Parquet files is never reset here.
-- Batches that committed rows they set aside ('<batch>!…' _batch_id: markers, losers among
-- repeats, unchanged re-deliveries), deleted right after the commit (tasks/load/purge.py _purge); a
-- row here outlives that only when the process died in between, and the next load finishes it.
create table if not exists ops.load_purges (
    raw_table varchar not null,
    batch_id varchar not null,
    loaded_at timestamptz not null
);

-- Parquet day files of the raw event tables (raw_events_store = "parquet"): the explicit list
-- the *_all views read (tasks/rawstore.py).
create table if not exists ops.raw_event_files (
    table_name varchar not null,
    day date not null,
    file varchar not null,
    n_rows bigint not null,
    n_bytes bigint,
    written_at timestamptz not null
);

create table if not exists ops.raw_event_retention (
    table_name varchar not null,
    expired_before date not null,
    expired_at timestamptz not null
);

-- Raw tables whose every row went through the landing redactor of a given version (rows landed
-- before it are redacted in place once: tasks/clients/zendesk.py redact_landed_rows).
create table if not exists ops.landing_redaction (
    table_name varchar primary key,
    version integer not null,
    n_rows bigint not null,
    applied_at timestamptz not null
);
