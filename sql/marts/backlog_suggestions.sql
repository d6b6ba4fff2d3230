-- grain: one row per open feature problem as of getvariable('as_of'); key: (as_of_date,
-- fingerprint). fingerprint = problem || ':' || feature_key: 'health' problems (kind fix or
-- investigate) and 'adoption' problems (kind improve) keep one identity, and one tracker issue,
-- while their kind changes. Problems open and resolve with hysteresis (int_feature_problems).
-- Priority is RICE-shaped: reach (feature users in the window, weighted by their account's ARR
-- relative to the mean product user's when an accounts source is loaded) x impact (urgency of
-- the kind x health deficit) x confidence / effort (from the tracker when it carries one, else 1).
with

health as (
    select * from marts.feature_health
    where as_of_date = getvariable('as_of')::date
),

problems as (
    select * from intermediate.int_feature_problems
    where is_open
),

metrics as (
    select * from intermediate.int_feature_metrics
),

tickets as (
    select * from intermediate.int_tickets_mapped
    where feature_key is not null and not is_deleted
),

bugs as (
    select * from intermediate.int_bugs_mapped
    where feature_key is not null and not is_deleted
),

efforts as (
    select * from intermediate.int_tracker_effort
),

source_status as (
    select * from quality.source_status
    where run_id = getvariable('run_id')
),

candidates as (
    select
        health.*,
        problems.problem,
        problems.kind,
        problems.state as problem_state,
        problems.onset_date,
        problems.n_days_since_onset,
        problems.had_usage_drop,
        problems.had_ticket_excess,
        problems.had_bug_cluster,
        problems.n_new_high_sev_bugs,
        problems.avg_daily_users as avg_daily_users_since_onset,
        problems.avg_expected_users as expected_daily_users_since_onset,
        problems.avg_expected_spread as expected_spread_since_onset,
        problems.n_tickets_since_onset,
        problems.expected_tickets_since_onset,
        problems.is_weak_share,
        problems.is_weak_stickiness,
        problems.is_weak_frequency,
        problems.dau_mau,
        problems.reference_dau_mau,
        problems.events_per_user_7d,
        problems.expected_events_per_user,
        metrics.is_stickiness_from_catalog,
        metrics.stickiness as feature_stickiness,
        metrics.reference_stickiness as feature_reference_stickiness,
        metrics.is_reference_from_catalog,
        metrics.share_7d,
        metrics.reference_share_7d as feature_reference_share_7d,
        metrics.bug_load_per_1k,
        case
            when getvariable('reach_mode') = 'arr_weighted' and metrics.arr_factor is not null
                then greatest(0.25, least(4.0, metrics.arr_factor))
            else 1.0
        end as reach_weight,
        case problems.kind when 'fix' then 1.0 when 'investigate' then 0.8 else 0.5 end
            as urgency,
        coalesce(efforts.effort, 1.0) as effort,
        coalesce(efforts.effort_source, 'none: 1 assumed') as effort_source
    from problems
    inner join health on problems.feature_key = health.feature_key
    inner join metrics on problems.feature_key = metrics.feature_key
    left join efforts on problems.problem || ':' || problems.feature_key = efforts.fingerprint
),

explained as (
    select
        *,
        case
            when problem = 'adoption'
                then concat_ws(
                    ' ',
                    format(
                        '{} of daily active users use it on a day (last 7 days), against {:.1f}% '
                        || '{}.',
                        case
                            when is_weak_share then format('Only {:.1f}%', 100 * share_7d)
                            else format('{:.1f}%', 100 * coalesce(share_7d, 0))
                        end,
                        100 * coalesce(feature_reference_share_7d, 0),
                        case
                            when is_reference_from_catalog then 'expected by the catalog'
                            else 'for the median feature'
                        end
                    ),
                    format(
                        'Its users come back on {:.0f}% of days (DAU/MAU over 28 days) against '
                        || '{:.0f}% {}{}.',
                        100 * coalesce(dau_mau, 0), 100 * coalesce(reference_dau_mau, 0),
                        case
                            when is_stickiness_from_catalog then 'expected by the catalog'
                            else 'for the median feature'
                        end,
                        case when is_weak_stickiness then ', too few to stick' else '' end
                    ),
                    case
                        when is_weak_frequency
                            then format(
                                'They do {:.1f} events a day with it, under half the {:.1f} the '
                                || 'catalog expects.',
                                events_per_user_7d, expected_events_per_user
                            )
                    end,
                    case
                        when problem_state = 'recovering'
                            then
                                'The evidence eased in the last days; it resolves after '
                                || getvariable('resolve_after_days')::integer
                                || ' days in a row without evidence.'
                        when onset_date <= as_of_date - 27 then 'Weak throughout the last 28 days.'
                        else format('Weak since {}.', onset_date)
                    end
                )
            else concat_ws(
                ' ',
                case
                    when had_usage_drop
                        then format(
                            'Daily users fell {:.0f}% below their same-weekday baseline since {} '
                            || '({} days): {:.0f} a day against {:.0f} expected (normal range '
                            || '{:.0f}-{:.0f}).',
                            -100 * (
                                avg_daily_users_since_onset
                                / nullif(expected_daily_users_since_onset, 0) - 1
                            ),
                            onset_date, n_days_since_onset, avg_daily_users_since_onset,
                            expected_daily_users_since_onset,
                            greatest(
                                0,
                                expected_daily_users_since_onset - 2 * expected_spread_since_onset
                            ),
                            expected_daily_users_since_onset + 2 * expected_spread_since_onset
                        )
                end,
                case
                    when had_ticket_excess or n_tickets_since_onset > 0
                        then format(
                            'Tickets since {}: {} against {:.1f} expected at the usual rate per '
                            || 'user ({:.1f}x){}.',
                            onset_date, n_tickets_since_onset,
                            coalesce(expected_tickets_since_onset, 0),
                            n_tickets_since_onset / greatest(expected_tickets_since_onset, 0.1),
                            case
                                when had_ticket_excess then ', a significant excess'
                                else ', within the normal range'
                            end
                        )
                end,
                case
                    when n_new_high_sev_bugs > 0
                        then format(
                            '{} new s1/s2 bug(s) opened since the week before the onset.',
                            n_new_high_sev_bugs
                        )
                end,
                case
                    when had_bug_cluster
                        then format(
                            '{} open bugs ({} s1) weigh {:.1f} per 1,000 daily users.',
                            n_open_bugs, n_open_s1_bugs, coalesce(bug_load_per_1k, 0)
                        )
                end,
                case
                    when kind = 'investigate' and had_usage_drop and not had_ticket_excess
                        then 'No ticket spike or new severe bug explains the drop yet: find out why.'
                    when kind = 'investigate' and not had_usage_drop
                        then 'Usage is within its normal range: find out what customers hit.'
                end,
                case
                    when problem_state = 'recovering'
                        then
                            'The evidence eased in the last days; it resolves after '
                            || getvariable('resolve_after_days')::integer
                            || ' days in a row without evidence.'
                end
            )
        end as why,
        case kind
            when 'fix'
                then
                    case
                        when had_ticket_excess then ['usage', 'bugs', 'tickets']
                        else ['usage', 'bugs']
                    end
            when 'investigate'
                then
                    case
                        when had_ticket_excess and had_usage_drop then ['tickets', 'usage']
                        when had_ticket_excess then ['tickets']
                        else ['usage']
                    end
            else ['usage']
        end as depends_on
    from candidates
),

ticket_evidence as (
    select
        explained.feature_key,
        explained.problem,
        list(
            {
                'id': tickets.ticket_id,
                'url': tickets.url,
                'subject': left(tickets.subject, 120),
                'priority': tickets.priority,
                'status': tickets.status,
                'created_at': tickets.created_at::date::varchar
            }
            order by tickets.priority_weight desc, tickets.created_at desc, tickets.ticket_id asc
        )[1:10] as top_tickets
    from explained
    inner join tickets
        on
            explained.feature_key = tickets.feature_key
            and tickets.created_at::date
            between least(explained.onset_date, getvariable('as_of')::date - 13)
            and getvariable('as_of')::date
    where explained.problem = 'health'
    group by all
),

bug_evidence as (
    select
        explained.feature_key,
        explained.problem,
        list(
            {
                'id': bugs.issue_id,
                'url': bugs.url,
                'title': left(bugs.title, 120),
                'severity': bugs.severity,
                'state': 'open',
                'closed_since': bugs.closed_at::date::varchar,
                'created_at': bugs.created_at::date::varchar
            }
            order by bugs.severity asc, bugs.created_at desc, bugs.issue_id asc
        )[1:10] as top_bugs
    from explained
    inner join bugs
        on
            explained.feature_key = bugs.feature_key
            and bugs.created_at::date <= getvariable('as_of')::date
            and (
                (bugs.state = 'open' and bugs.closed_at is null)
                or bugs.closed_at::date > getvariable('as_of')::date
            )
    where explained.problem = 'health'
    group by all
),

blocking as (
    select
        explained.feature_key,
        explained.problem,
        string_agg(
            source_status.source_kind || ' (' || source_status.reason || ')', '; '
            order by source_status.source_kind
        ) as blocked_by
    from explained
    inner join source_status
        on
            list_contains(explained.depends_on, source_status.source_kind)
            and source_status.is_writeback_blocked
    group by all
),

final as (
    select
        explained.as_of_date,
        explained.problem || ':' || explained.feature_key as fingerprint,
        explained.problem,
        explained.kind,
        explained.feature_key,
        explained.feature_name,
        case
            when explained.kind = 'fix' and explained.had_usage_drop
                then 'Fix: ' || explained.feature_name || ' is degrading'
            when explained.kind = 'fix'
                then 'Fix: bugs pile up on ' || explained.feature_name
            when explained.kind = 'investigate' and explained.had_ticket_excess
                then 'Investigate: support spike on ' || explained.feature_name
            when explained.kind = 'investigate'
                then 'Investigate: ' || explained.feature_name || ' usage is falling'
            else 'Improve: ' || explained.feature_name || ' adoption'
        end as title,
        explained.why,
        explained.problem_state,
        explained.onset_date,
        round(explained.n_users * explained.reach_weight)::bigint as reach,
        explained.n_users as reach_users,
        explained.n_accounts as reach_accounts,
        explained.arr_of_accounts as reach_arr,
        round(explained.reach_weight, 3) as reach_weight,
        round(explained.urgency * (0.25 + 2.75 * (100 - explained.health_score) / 100), 2)
            as impact,
        explained.urgency,
        explained.confidence,
        explained.effort,
        explained.effort_source,
        round(
            round(explained.n_users * explained.reach_weight)
            * round(explained.urgency * (0.25 + 2.75 * (100 - explained.health_score) / 100), 2)
            * explained.confidence
            / explained.effort,
            1
        ) as priority_score,
        explained.health_score,
        explained.health_rank,
        explained.explanation,
        explained.confidence_reasons,
        explained.depends_on,
        blocking.blocked_by,
        blocking.blocked_by is not null as is_blocked,
        {
            'n_users': explained.n_users,
            'n_accounts': explained.n_accounts,
            'arr_at_risk': explained.arr_of_accounts,
            'adoption_rate': explained.adoption_rate,
            'share_of_actives_7d': explained.share_7d,
            'reference_share_7d': explained.feature_reference_share_7d,
            'stickiness': explained.feature_stickiness,
            'reference_stickiness': explained.feature_reference_stickiness,
            'usage_trend': explained.usage_trend,
            'avg_daily_users_since_onset': explained.avg_daily_users_since_onset,
            'expected_daily_users_since_onset': explained.expected_daily_users_since_onset,
            'expected_spread_since_onset': explained.expected_spread_since_onset,
            'onset_date': explained.onset_date::varchar,
            'n_days_since_onset': explained.n_days_since_onset,
            'n_tickets_since_onset': explained.n_tickets_since_onset,
            'expected_tickets_since_onset': explained.expected_tickets_since_onset,
            'recent_weekly_users': explained.recent_wau,
            'baseline_weekly_users': explained.baseline_wau,
            'n_tickets_window': explained.n_tickets_window,
            'n_tickets_14d': explained.n_tickets_14d,
            'n_tickets_prior_28d': explained.n_tickets_prior_28d,
            'ticket_spike_ratio': explained.ticket_spike_ratio,
            'tickets_per_1k_users': explained.tickets_per_1k_users,
            'n_open_bugs': explained.n_open_bugs,
            'n_open_high_sev_bugs': explained.n_open_high_sev_bugs,
            'n_new_high_sev_bugs_14d': explained.n_new_high_sev_bugs_14d,
            'n_new_high_sev_bugs_since_onset': explained.n_new_high_sev_bugs,
            'scores': {
                'health': explained.health_score,
                'adoption': explained.adoption_score,
                'engagement': explained.engagement_score,
                'retention': explained.retention_score,
                'support': explained.support_score,
                'bugs': explained.bugs_score,
                'trend': explained.trend_score
            },
            'top_tickets': coalesce(ticket_evidence.top_tickets, []),
            'top_bugs': coalesce(bug_evidence.top_bugs, [])
        }::json as evidence,
        explained.formula_version,
        getvariable('run_id') as run_id
    from explained
    left join ticket_evidence
        on
            explained.feature_key = ticket_evidence.feature_key
            and explained.problem = ticket_evidence.problem
    left join bug_evidence
        on
            explained.feature_key = bug_evidence.feature_key
            and explained.problem = bug_evidence.problem
    left join blocking
        on explained.feature_key = blocking.feature_key and explained.problem = blocking.problem
)

select
    *,
    row_number() over (order by priority_score desc, fingerprint asc) as priority_rank
from final
order by priority_rank
