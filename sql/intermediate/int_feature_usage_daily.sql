-- grain: one row per feature x UTC day with activity; key: (feature_key, activity_date).
-- feature_key '__product__' counts every active user (the denominator for adoption).
-- The usage half of marts.feature_daily, rolled up from int_feature_user_days so the mart reads
-- feature x day rows instead of every feature x user x day row each night.
-- Maintained incrementally with int_feature_user_days (tasks/transform.py build_usage_rollups):
-- with the variable rollup_days set to a list of dates, only those days are computed; NULL
-- computes every day.
with

user_days as (
    select * from intermediate.int_feature_user_days
    where
        getvariable('rollup_days') is null
        or list_contains(getvariable('rollup_days'), activity_date)
),

final as (
    select
        feature_key,
        activity_date,
        count(*) as n_users,
        count(distinct account_key) as n_accounts,
        sum(n_events) as n_events
    from user_days
    group by all
)

select * from final
