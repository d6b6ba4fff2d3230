-- grain: one row per feature as of getvariable('as_of'); key: (as_of_date, feature_key).
-- The error signal next to the health score: unresolved error issues, their events and users.
with

errors as (
    select * from intermediate.int_errors_mapped
    where feature_key is not null and not is_deleted
),

features as (
    select feature_key from marts.dim_features
),

per_feature as (
    select
        feature_key,
        count(*) filter (where status = 'unresolved') as n_unresolved_issues,
        coalesce(sum(n_events) filter (where status = 'unresolved'), 0) as n_error_events,
        coalesce(max(n_users) filter (where status = 'unresolved'), 0) as n_max_users_affected,
        count(*) filter (
            where first_seen_at::date > getvariable('as_of')::date - 14
        ) as n_new_issues_14d
    from errors
    group by all
),

final as (
    select
        getvariable('as_of')::date as as_of_date,
        features.feature_key,
        coalesce(per_feature.n_unresolved_issues, 0) as n_unresolved_issues,
        coalesce(per_feature.n_error_events, 0) as n_error_events,
        coalesce(per_feature.n_max_users_affected, 0) as n_max_users_affected,
        coalesce(per_feature.n_new_issues_14d, 0) as n_new_issues_14d
    from features
    left join per_feature on features.feature_key = per_feature.feature_key
)

select * from final
