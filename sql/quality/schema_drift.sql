-- grain: one row per raw table x top-level field that drifted from quality.schema_baseline;
-- key: (raw_table, field). Judged on the latest profiled delivery of each raw table.
-- new: not in the baseline; missing: (nearly) always there before, now in under half of >= 3
-- records; retyped: the usual non-null JSON type changed (numbers count as one type).
with

latest_run as (
    select
        raw_table,
        arg_max(run_id, profiled_at) as run_id
    from quality.schema_profile
    group by all
),

latest as (
    select profile.*
    from quality.schema_profile as profile
    inner join latest_run
        on
            profile.raw_table = latest_run.raw_table
            and profile.run_id = latest_run.run_id
),

latest_size as (
    select
        raw_table,
        any_value(run_id) as run_id,
        max(n_records) as n_records
    from latest
    group by all
),

baseline as (
    select
        *,
        n_present / greatest(n_records, 1) as presence
    from quality.schema_baseline
    where raw_table in (select latest_size.raw_table from latest_size)
),

compared as (
    select
        coalesce(latest.raw_table, baseline.raw_table) as raw_table,
        coalesce(latest.field, baseline.field) as field,
        baseline.field is not null as in_baseline,
        baseline.presence as baseline_presence,
        coalesce(latest.n_present, 0) / greatest(latest_size.n_records, 1) as current_presence,
        baseline.json_type as baseline_type,
        latest.json_type as current_type,
        coalesce(latest.n_present, 0) as n_present,
        coalesce(latest.n_nonnull, 0) as n_nonnull,
        latest_size.n_records,
        latest_size.run_id as profile_run_id
    from latest
    full outer join baseline
        on latest.raw_table = baseline.raw_table and latest.field = baseline.field
    inner join latest_size
        on coalesce(latest.raw_table, baseline.raw_table) = latest_size.raw_table
),

classified as (
    select
        *,
        case
            when not in_baseline and n_present >= 1 then 'new'
            when
                baseline_presence >= 0.95 and current_presence < 0.5 and n_records >= 3
                then 'missing'
            when
                baseline_type is not null and current_type is not null
                and current_type <> baseline_type and n_nonnull >= 3
                then 'retyped'
        end as change
    from compared
),

final as (
    select
        raw_table,
        field,
        change,
        round(baseline_presence, 4) as baseline_presence,
        round(current_presence, 4) as current_presence,
        baseline_type,
        current_type,
        n_records,
        profile_run_id,
        case change
            when 'new'
                then printf(
                    '%s: new field in %.0f%% of the %d latest records', field,
                    100 * current_presence, n_records
                )
            when 'missing'
                then printf(
                    '%s: in %.0f%% of records before, %.0f%% of the %d latest', field,
                    100 * baseline_presence, 100 * current_presence, n_records
                )
            else printf('%s: %s before, now %s', field, baseline_type, current_type)
        end as detail
    from classified
    where change is not null
)

select * from final
order by raw_table, change, field
