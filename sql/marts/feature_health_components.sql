-- grain: one row per feature x health component as of getvariable('as_of');
-- key: (as_of_date, feature_key, component).
-- Every component is scored 0-100 (100 = healthy); contribution = weight x score, and the
-- contributions of a feature sum to its health score. Constants below belong to formula health-v1:
-- change one and bump the formula version.
with

metrics as (
    select * from intermediate.int_feature_metrics
),

measured as (
    select
        as_of_date,
        feature_key,
        'adoption' as component,
        1 as component_order,
        n_users / nullif(n_product_users, 0) as metric_value,
        'share of active product users who used the feature in the window' as metric_definition,
        least(100, 100 * coalesce(n_users / nullif(n_product_users, 0), 0) / 0.40) as score,
        format(
            '{} of {} active users ({:.1f}%)', n_users, n_product_users,
            100 * coalesce(n_users / nullif(n_product_users, 0), 0)
        ) as detail
    from metrics
    union all
    select
        as_of_date,
        feature_key,
        'engagement',
        2,
        avg_daily_users / nullif(n_users, 0),
        'stickiness: average daily users / users in the window',
        least(100, 100 * coalesce(avg_daily_users / nullif(n_users, 0), 0) / 0.25),
        format(
            'stickiness {:.1f}% ({:.1f} daily of {} users)',
            100 * coalesce(avg_daily_users / nullif(n_users, 0), 0), avg_daily_users, n_users
        )
    from metrics
    union all
    select
        as_of_date,
        feature_key,
        'retention',
        3,
        n_retained_users / nullif(n_previous_users, 0),
        'share of the previous window''s users who came back in this window',
        case
            when n_previous_users = 0 then 50
            else least(100, 100 * (n_retained_users / n_previous_users) / 0.70)
        end,
        format('{} of {} previous users returned', n_retained_users, n_previous_users)
    from metrics
    union all
    select
        as_of_date,
        feature_key,
        'support',
        4,
        1000 * n_tickets_weighted_window / nullif(n_users, 0),
        'priority-weighted tickets per 1,000 feature users in the window',
        case
            when n_users = 0 then (case when n_tickets_weighted_window > 0 then 0 else 100 end)
            else 100 / (1 + (1000 * n_tickets_weighted_window / n_users) / 50)
        end,
        format(
            '{} tickets ({:.1f} weighted) = {:.1f} per 1k users', n_tickets_window,
            n_tickets_weighted_window,
            coalesce(1000 * n_tickets_weighted_window / nullif(n_users, 0), 0)
        )
    from metrics
    union all
    select
        as_of_date,
        feature_key,
        'bugs',
        5,
        1000 * n_bugs_weighted / nullif(n_users, 0),
        'open bugs weighted by severity and age per 1,000 feature users',
        case
            when n_users = 0 then (case when n_bugs_weighted > 0 then 0 else 100 end)
            else 100 / (1 + (1000 * n_bugs_weighted / n_users) / 20)
        end,
        format(
            '{} open bugs ({} s1/s2) = {:.1f} weighted per 1k users', n_open_bugs,
            n_open_high_sev_bugs, coalesce(1000 * n_bugs_weighted / nullif(n_users, 0), 0)
        )
    from metrics
    union all
    select
        as_of_date,
        feature_key,
        'trend',
        6,
        recent_wau / nullif(baseline_wau, 0) - 1,
        'weekly users, last 2 weeks vs median of the 4 weeks before',
        case
            when baseline_wau = 0 then 100
            else 100 * greatest(0, least(1, 1 + least(recent_wau / baseline_wau - 1, 0) / 0.5))
        end,
        format(
            'weekly users {:.0f} vs baseline {:.0f} ({:+.1f}%)', recent_wau, baseline_wau,
            100 * coalesce(recent_wau / nullif(baseline_wau, 0) - 1, 0)
        )
    from metrics
),

weights as (
    select
        unnest([
            'adoption', 'engagement', 'retention', 'support', 'bugs', 'trend'
        ]) as component,
        unnest([
            getvariable('w_adoption'),
            getvariable('w_engagement'),
            getvariable('w_retention'),
            getvariable('w_support'),
            getvariable('w_bugs'),
            getvariable('w_trend')
        ])::double as weight
),

final as (
    select
        measured.as_of_date,
        measured.feature_key,
        measured.component,
        measured.component_order,
        measured.metric_value,
        measured.metric_definition,
        round(measured.score, 2) as score,
        weights.weight,
        round(weights.weight * measured.score, 3) as contribution,
        round(weights.weight * (100 - measured.score), 3) as points_lost,
        measured.detail,
        getvariable('formula_version') as formula_version
    from measured
    inner join weights on measured.component = weights.component
)

select * from final
order by feature_key, component_order
