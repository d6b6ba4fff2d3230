-- grain: one row per suggestion as of getvariable('as_of'); key: (as_of_date, fingerprint).
-- One suggestion per unhealthy feature, kind by precedence fix > investigate > improve.
-- Priority is RICE-shaped: reach (feature users) x impact (health deficit, 0.25-3)
-- x confidence / effort (1 until tracker estimates exist). Evidence is aggregate and redacted.
with

health as (
    select * from marts.feature_health
    where as_of_date = getvariable('as_of')::date
),

tickets as (
    select * from intermediate.int_tickets_mapped
    where feature_key is not null and not is_deleted
),

bugs as (
    select * from intermediate.int_bugs_mapped
    where feature_key is not null and not is_deleted
),

source_status as (
    select * from quality.source_status
    where run_id = getvariable('run_id')
),

triggered as (
    select
        *,
        case
            when usage_trend <= -0.2 and (n_new_high_sev_bugs_14d >= 1 or bugs_score < 50)
                then 'fix'
            when bugs_score < 35 then 'fix'
            when ticket_spike_ratio >= 2 and n_tickets_14d >= 5 then 'investigate'
            when adoption_score < 25 or retention_score < 40 then 'improve'
        end as kind
    from health
),

candidates as (
    select
        *,
        case
            when kind = 'fix' and usage_trend <= -0.2
                then format(
                    'Weekly users fell {:.0f}% against the 4-week baseline while {} new '
                    || 's1/s2 bugs were opened in the last 14 days.',
                    -100 * usage_trend, n_new_high_sev_bugs_14d
                )
            when kind = 'fix'
                then format(
                    '{} open bugs ({} s1/s2) weigh on {} users.',
                    n_open_bugs, n_open_high_sev_bugs, n_users
                )
            when kind = 'investigate'
                then format(
                    'Tickets in the last 14 days ran at {:.1f}x the rate of the 4 weeks before '
                    || '({} vs {}).',
                    ticket_spike_ratio, n_tickets_14d, n_tickets_prior_28d
                )
            else format(
                'Only {:.1f}% of active users used it in the last {} days (adoption score {:.0f}, '
                || 'retention score {:.0f}).',
                100 * coalesce(adoption_rate, 0), window_days, adoption_score, retention_score
            )
        end as why,
        case kind
            when 'fix'
                then
                    case
                        when ticket_spike_ratio >= 2 then ['usage', 'bugs', 'tickets']
                        else ['usage', 'bugs']
                    end
            when 'investigate' then ['tickets', 'usage']
            else ['usage']
        end as depends_on
    from triggered
    where kind is not null
),

ticket_evidence as (
    select
        tickets.feature_key,
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
    from tickets
    where
        tickets.created_at::date
        between getvariable('as_of')::date - 13 and getvariable('as_of')::date
    group by all
),

bug_evidence as (
    select
        bugs.feature_key,
        list(
            {
                'id': bugs.issue_id,
                'url': bugs.url,
                'title': left(bugs.title, 120),
                'severity': bugs.severity,
                'state': bugs.state,
                'created_at': bugs.created_at::date::varchar
            }
            order by bugs.severity asc, bugs.created_at desc, bugs.issue_id asc
        )[1:10] as top_bugs
    from bugs
    where
        bugs.created_at::date <= getvariable('as_of')::date
        and (bugs.state = 'open' or bugs.closed_at::date > getvariable('as_of')::date)
    group by all
),

blocking as (
    select
        candidates.feature_key,
        string_agg(
            source_status.source_kind || ' (' || source_status.reason || ')', '; '
            order by source_status.source_kind
        ) as blocked_by
    from candidates
    inner join source_status
        on
            list_contains(candidates.depends_on, source_status.source_kind)
            and source_status.is_writeback_blocked
    group by all
),

final as (
    select
        candidates.as_of_date,
        candidates.kind || ':' || candidates.feature_key as fingerprint,
        candidates.kind,
        candidates.feature_key,
        candidates.feature_name,
        case candidates.kind
            when 'fix' then 'Fix: ' || candidates.feature_name || ' is degrading'
            when 'investigate' then 'Investigate: support spike on ' || candidates.feature_name
            else 'Improve: ' || candidates.feature_name || ' adoption and retention'
        end as title,
        candidates.why,
        greatest(candidates.n_users, candidates.baseline_wau)::bigint as reach,
        round(0.25 + 2.75 * (100 - candidates.health_score) / 100, 2) as impact,
        candidates.confidence,
        1.0 as effort,
        round(
            greatest(candidates.n_users, candidates.baseline_wau)
            * (0.25 + 2.75 * (100 - candidates.health_score) / 100)
            * candidates.confidence
            / 1.0,
            1
        ) as priority_score,
        candidates.health_score,
        candidates.health_rank,
        candidates.explanation,
        candidates.confidence_reasons,
        candidates.depends_on,
        blocking.blocked_by,
        blocking.blocked_by is not null as is_blocked,
        {
            'n_users': candidates.n_users,
            'n_accounts': candidates.n_accounts,
            'adoption_rate': candidates.adoption_rate,
            'usage_trend': candidates.usage_trend,
            'recent_weekly_users': candidates.recent_wau,
            'baseline_weekly_users': candidates.baseline_wau,
            'n_tickets_window': candidates.n_tickets_window,
            'n_tickets_14d': candidates.n_tickets_14d,
            'n_tickets_prior_28d': candidates.n_tickets_prior_28d,
            'ticket_spike_ratio': candidates.ticket_spike_ratio,
            'tickets_per_1k_users': candidates.tickets_per_1k_users,
            'n_open_bugs': candidates.n_open_bugs,
            'n_open_high_sev_bugs': candidates.n_open_high_sev_bugs,
            'n_new_high_sev_bugs_14d': candidates.n_new_high_sev_bugs_14d,
            'scores': {
                'health': candidates.health_score,
                'adoption': candidates.adoption_score,
                'engagement': candidates.engagement_score,
                'retention': candidates.retention_score,
                'support': candidates.support_score,
                'bugs': candidates.bugs_score,
                'trend': candidates.trend_score
            },
            'top_tickets': coalesce(ticket_evidence.top_tickets, []),
            'top_bugs': coalesce(bug_evidence.top_bugs, [])
        }::json as evidence,
        candidates.formula_version,
        getvariable('run_id') as run_id
    from candidates
    left join ticket_evidence on candidates.feature_key = ticket_evidence.feature_key
    left join bug_evidence on candidates.feature_key = bug_evidence.feature_key
    left join blocking on candidates.feature_key = blocking.feature_key
)

select
    *,
    row_number() over (order by priority_score desc, fingerprint asc) as priority_rank
from final
order by priority_rank
