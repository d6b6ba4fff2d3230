-- grain: one row per feature as of getvariable('as_of'); key: (as_of_date, feature_key).
-- Health score = sum of weighted component scores (see feature_health_components); the
-- explanation names the components that cost the most points. health_rank 1 = least healthy.
with

metrics as (
    select * from intermediate.int_feature_metrics
),

components as (
    select * from marts.feature_health_components
    where as_of_date = getvariable('as_of')::date
),

source_status as (
    select * from quality.source_status
    where run_id = getvariable('run_id')
),

scored as (
    select
        feature_key,
        round(sum(contribution::decimal(38, 10))::double, 2) as health_score,
        max(score) filter (where component = 'adoption') as adoption_score,
        max(score) filter (where component = 'engagement') as engagement_score,
        max(score) filter (where component = 'retention') as retention_score,
        max(score) filter (where component = 'support') as support_score,
        max(score) filter (where component = 'bugs') as bugs_score,
        max(score) filter (where component = 'trend') as trend_score,
        any_value(formula_version) as formula_version
    from components
    group by all
),

explained as (
    select
        feature_key,
        string_agg(
            format('{} -{:.0f} pts ({})', component, points_lost, detail),
            '; ' order by points_lost desc, component asc
        ) filter (where lost_rank <= 3 and points_lost >= 1) as explanation
    from (
        select
            *,
            row_number() over (
                partition by feature_key order by points_lost desc, component asc
            ) as lost_rank
        from components
    ) as ranked_components
    group by all
),

data_quality as (
    select
        coalesce(
            exp(sum(ln(greatest(confidence_factor, 1e-9))::decimal(38, 10))::double), 1.0
        ) as dq_factor,
        string_agg(source_kind || ': ' || reason, '; ' order by source_kind)
        filter (where confidence_factor < 1) as dq_reasons
    from source_status
),

final as (
    select
        metrics.as_of_date,
        metrics.window_days,
        metrics.feature_key,
        metrics.feature_name,
        scored.health_score,
        rank() over (order by scored.health_score asc, metrics.feature_key asc) as health_rank,
        round(least(1.0, metrics.n_users / 30.0) * data_quality.dq_factor, 3) as confidence,
        nullif(
            concat_ws(
                '; ',
                case
                    when metrics.n_users < 30
                        then format('thin evidence: {} users in the window', metrics.n_users)
                end,
                data_quality.dq_reasons
            ),
            ''
        ) as confidence_reasons,
        scored.adoption_score,
        scored.engagement_score,
        scored.retention_score,
        scored.support_score,
        scored.bugs_score,
        scored.trend_score,
        metrics.n_users,
        metrics.n_accounts,
        metrics.n_product_users,
        round(metrics.n_users / nullif(metrics.n_product_users, 0), 4) as adoption_rate,
        round(metrics.usage_vs_baseline_7d, 4) as usage_trend,
        round(metrics.avg_daily_users, 1) as avg_daily_users,
        round(metrics.expected_daily_users_7d, 1) as expected_daily_users_7d,
        round(metrics.share_7d, 4) as share_of_actives_7d,
        round(metrics.reference_share_7d, 4) as reference_share_7d,
        round(metrics.stickiness, 4) as stickiness,
        round(metrics.reference_stickiness, 4) as reference_stickiness,
        round(metrics.events_per_user, 2) as events_per_user,
        metrics.is_in_launch_ramp,
        metrics.recent_wau,
        metrics.baseline_wau,
        metrics.n_tickets_window,
        metrics.n_tickets_14d,
        metrics.n_tickets_prior_28d,
        round(metrics.tickets_loo / nullif(metrics.expected_tickets_loo, 0), 2) as ticket_spike_ratio,
        round(metrics.ticket_stat, 2) as ticket_excess_z,
        metrics.is_health_problem,
        metrics.health_kind,
        metrics.health_state,
        metrics.health_onset_date,
        metrics.is_adoption_problem,
        metrics.adoption_state,
        metrics.n_accounts_with_arr,
        metrics.arr_of_accounts,
        round(metrics.arr_factor, 3) as arr_factor,
        round(1000 * metrics.n_tickets_weighted_window / nullif(metrics.n_users, 0), 2)
            as tickets_per_1k_users,
        metrics.n_open_bugs,
        metrics.n_open_high_sev_bugs,
        metrics.n_open_s1_bugs,
        metrics.n_new_high_sev_bugs_14d,
        explained.explanation,
        scored.formula_version,
        metrics.catalog_version,
        getvariable('run_id') as run_id
    from metrics
    inner join scored on metrics.feature_key = scored.feature_key
    left join explained on metrics.feature_key = explained.feature_key
    cross join data_quality
)

select * from final
order by health_rank
