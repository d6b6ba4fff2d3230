-- grain: one row per feature x health component as of getvariable('as_of');
-- key: (as_of_date, feature_key, component).
-- Every component is scored 0-100 (100 = healthy); contribution = weight x score, and the
-- contributions of a feature sum to its health score. Constants below belong to formula health-v2:
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
        share_7d as metric_value,
        'share of product actives using the feature on a day (last 7 days) vs the reference '
        || '(catalog expected_daily_share, else the median feature)' as metric_definition,
        case
            when is_in_launch_ramp or reference_share_7d is null then 100
            else least(100, 100 * coalesce(share_7d, 0) / (0.5 * reference_share_7d))
        end as score,
        case
            when is_in_launch_ramp
                then format(
                    'launch ramp since {}: not judged ({:.1f}% of daily actives)',
                    coalesce(launched_on::varchar, 'first use'), 100 * coalesce(share_7d, 0)
                )
            else format(
                '{:.1f}% of daily actives vs {:.1f}% {}', 100 * coalesce(share_7d, 0),
                100 * coalesce(reference_share_7d, 0),
                case when is_reference_from_catalog then 'expected (catalog)' else 'median feature' end
            )
        end as detail
    from metrics
    union all
    select
        as_of_date,
        feature_key,
        'engagement',
        2,
        stickiness,
        'stickiness: average daily users / users over the last 28 days (DAU/MAU), vs the reference '
        || '(catalog expected_stickiness, else the median feature)',
        case
            when is_in_launch_ramp or reference_stickiness is null or stickiness is null then 100
            else least(100, 100 * stickiness / (0.5 * reference_stickiness))
        end,
        format(
            'DAU/MAU {:.1f}% vs {:.1f}% {}; {:.1f} events per user-day',
            100 * coalesce(stickiness, 0), 100 * coalesce(reference_stickiness, 0),
            case when is_stickiness_from_catalog then 'expected (catalog)' else 'median feature' end,
            coalesce(events_per_user, 0)
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
        tickets_loo / nullif(expected_tickets_loo, 0),
        'tickets against their expected count given exposure (70 %: excess when the Poisson test '
        || 'is significant; 30 %: priority-weighted tickets per 1,000 feature users)',
        0.7 * case
            when ticket_stat >= getvariable('ticket_z')::double and tickets_loo > 0
                then 100 * least(1, expected_tickets_loo / tickets_loo)
            else 100
        end
        + 0.3 * case
            when n_users = 0 then (case when n_tickets_weighted_window > 0 then 0 else 100 end)
            else 100 / (1 + (1000 * n_tickets_weighted_window / n_users) / 50)
        end,
        format(
            '{:.0f} tickets vs {:.1f} expected at the usual rate (busiest day winsorised); {} in '
            || '{} days = {:.1f} weighted per 1k users',
            coalesce(tickets_loo, 0), coalesce(expected_tickets_loo, 0), n_tickets_window,
            window_days, coalesce(1000 * n_tickets_weighted_window / nullif(n_users, 0), 0)
        )
    from metrics
    union all
    select
        as_of_date,
        feature_key,
        'bugs',
        5,
        bug_load_per_1k,
        'open bugs weighted by severity and age per 1,000 average daily users; each open s1 '
        || 'caps the score at 100 - 25 per s1',
        least(coalesce(bug_load_score, 100), greatest(0, 100 - 25 * coalesce(n_open_s1_bugs, 0))),
        format(
            '{} open bugs ({} s1, {} s2) = {:.1f} weighted per 1k daily users', n_open_bugs,
            coalesce(n_open_s1_bugs, 0), coalesce(n_open_s2_bugs, 0), coalesce(bug_load_per_1k, 0)
        )
    from metrics
    union all
    select
        as_of_date,
        feature_key,
        'trend',
        6,
        avg_daily_users_since_onset / nullif(expected_daily_users_since_onset, 0) - 1,
        'daily users since the onset of a detected drop vs the same-weekday baseline '
        || '(100 without a detected drop, 0 at -50 %)',
        case
            when coalesce(is_health_problem and had_usage_drop, false)
                then 100 * greatest(
                    0,
                    1 + least(
                        0,
                        avg_daily_users_since_onset
                        / nullif(expected_daily_users_since_onset, 0) - 1
                    ) / 0.5
                )
            else 100
        end,
        case
            when coalesce(is_health_problem and had_usage_drop, false)
                then format(
                    '{:.0f} daily users since {} vs {:.0f} expected ({:+.0f}%)',
                    avg_daily_users_since_onset, health_onset_date,
                    expected_daily_users_since_onset,
                    100 * (
                        avg_daily_users_since_onset
                        / nullif(expected_daily_users_since_onset, 0) - 1
                    )
                )
            else format('no detected drop ({:.0f} average daily users)', avg_daily_users)
        end
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
