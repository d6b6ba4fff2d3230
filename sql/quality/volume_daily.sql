-- grain: one row per canonical staging table x source x day of the checked window; key:
-- (table_name, source, day). Rows per day (before validation) against the median of the same
-- weekday in the 4 weeks before, for the volume and duplicate rules of the staging suites.
-- Days without any row are listed with n_rows = 0, so a missing day shows. Checked window: the
-- getvariable('dq_check_days') days up to getvariable('as_of'). Reads quality.volume_day_counts
-- (tasks/quality.py update_volume_rows), not the staging tables.
with

params as (
    select
        getvariable('as_of')::date as as_of,
        getvariable('dq_check_days')::integer as check_days
),

day_counts as (
    -- quality.volume_day_counts: rows and repeats per record day, kept up to date per
    -- validated batch from quality.volume_rows (one narrow row per staging row)
    select
        table_name,
        source,
        day,
        n_rows,
        n_duplicate_content
    from quality.volume_day_counts
),

first_days as (
    select
        table_name,
        source,
        min(day) as first_day
    from day_counts
    group by all
),

counted as (
    select
        day_counts.table_name,
        day_counts.source,
        day_counts.day,
        day_counts.n_rows,
        day_counts.n_duplicate_content
    from day_counts
    cross join params
    where day_counts.day between params.as_of - (params.check_days + 27) and params.as_of
),

spine as (
    select
        first_days.table_name,
        first_days.source,
        unnest(
            generate_series(
                greatest(first_days.first_day, params.as_of - (params.check_days + 27)),
                params.as_of,
                interval 1 day
            )
        )::date as day
    from first_days
    cross join params
    where first_days.first_day <= params.as_of
),

daily as (
    select
        spine.table_name,
        spine.source,
        spine.day,
        coalesce(counted.n_rows, 0) as n_rows,
        coalesce(counted.n_duplicate_content, 0) as n_duplicate_content
    from spine
    left join counted
        on
            spine.table_name = counted.table_name
            and spine.source = counted.source
            and spine.day = counted.day
),

with_baseline as (
    select
        checked.table_name,
        checked.source,
        checked.day,
        checked.n_rows,
        checked.n_duplicate_content,
        count(before.n_rows) as n_baseline_days,
        median(before.n_rows) as baseline_median
    from daily as checked
    cross join params
    left join daily as before
        on
            checked.table_name = before.table_name
            and checked.source = before.source
            and before.day in (
                checked.day - 7, checked.day - 14, checked.day - 21, checked.day - 28
            )
    where checked.day > params.as_of - params.check_days
    group by all
),

final as (
    select
        *,
        printf(
            '%s %s: %d rows (%d repeated) vs a median of %.0f on the same weekday of the '
            || '4 weeks before',
            source, day, n_rows, n_duplicate_content, coalesce(baseline_median, 0)
        ) as detail
    from with_baseline
)

select * from final
order by table_name, source, day
