-- grain: one row per catalog feature x problem family as of getvariable('as_of');
-- key: (as_of_date, feature_key, problem). problem 'health' (kinds fix / investigate) or
-- 'adoption' (kind improve). Hysteresis over the 28 days of int_feature_evidence: a problem opens
-- once its evidence held on open_after_days consecutive days and resolves only after
-- resolve_after_days consecutive days without evidence, so one noisy night neither opens nor
-- closes it. The state depends on the data up to as_of only (stateless, reproducible, backfillable).
with

params as (
    select
        getvariable('as_of')::date as as_of,
        getvariable('open_after_days')::integer as open_after,
        getvariable('resolve_after_days')::integer as resolve_after
),

evidence as (
    select * from intermediate.int_feature_evidence
),

baseline as (
    select * from intermediate.int_feature_baseline
),

daily as (
    select * from marts.feature_daily
),

flags as (
    select
        feature_key,
        day,
        'health' as problem,
        is_usage_drop or is_ticket_excess or is_bug_cluster as is_evidence
    from evidence
    union all
    select
        feature_key,
        day,
        'adoption',
        coalesce(is_weak_share, false)
        or coalesce(is_weak_stickiness, false)
        or coalesce(is_weak_frequency, false)
    from evidence
),

islands as (
    select
        feature_key,
        problem,
        is_evidence,
        min(day) as start_day,
        max(day) as end_day,
        count(*) as n_days
    from (
        select
            *,
            day - (row_number() over (
                partition by feature_key, problem, is_evidence order by day
            ))::integer as island
        from flags
    ) as numbered
    group by feature_key, problem, is_evidence, island
),

triggers as (
    select
        islands.feature_key,
        islands.problem,
        max(islands.end_day) as last_trigger_day
    from islands
    cross join params
    where islands.is_evidence and islands.n_days >= params.open_after
    group by all
),

resets as (
    select
        triggers.feature_key,
        triggers.problem,
        triggers.last_trigger_day,
        max(islands.end_day) filter (
            where islands.end_day < triggers.last_trigger_day
        ) as last_reset_before,
        bool_or(islands.start_day > triggers.last_trigger_day) as has_healthy_run_after
    from triggers
    cross join params
    inner join islands
        on
            triggers.feature_key = islands.feature_key
            and triggers.problem = islands.problem
            and not islands.is_evidence
            and params.resolve_after <= islands.n_days
    group by all
),

episodes as (
    select
        triggers.feature_key,
        triggers.problem,
        triggers.last_trigger_day,
        coalesce(resets.last_reset_before + 1, params.as_of - 27) as episode_start,
        not coalesce(resets.has_healthy_run_after, false) as is_open
    from triggers
    cross join params
    left join resets
        on triggers.feature_key = resets.feature_key and triggers.problem = resets.problem
),

episode_evidence as (
    select
        episodes.feature_key,
        episodes.problem,
        least(
            min(evidence.day) filter (where flags.is_evidence),
            min(evidence.drop_onset) filter (where evidence.is_usage_drop),
            min(evidence.ticket_onset) filter (where evidence.is_ticket_excess)
        ) as onset_date,
        count(*) filter (where flags.is_evidence) as n_evidence_days,
        bool_or(evidence.is_usage_drop) as had_usage_drop,
        bool_or(evidence.is_ticket_excess) as had_ticket_excess,
        bool_or(evidence.is_bug_cluster) as had_bug_cluster
    from episodes
    inner join evidence
        on
            episodes.feature_key = evidence.feature_key
            and episodes.episode_start <= evidence.day
    inner join flags
        on
            evidence.feature_key = flags.feature_key
            and evidence.day = flags.day
            and episodes.problem = flags.problem
    group by all
),

since_onset as (
    select
        episode_evidence.feature_key,
        episode_evidence.problem,
        count(*) as n_days_since_onset,
        avg(baseline.n_users::decimal(38, 10))::double as avg_daily_users,
        avg(baseline.expected_users::decimal(38, 10))::double as avg_expected_users,
        avg(baseline.expected_users_spread::decimal(38, 10))::double as avg_expected_spread,
        sum(baseline.n_tickets) as n_tickets,
        sum(baseline.expected_tickets::decimal(38, 10))::double as expected_tickets,
        sum(baseline.n_s1_bugs_opened) as n_s1_bugs_opened,
        sum(baseline.n_s2_bugs_opened) as n_s2_bugs_opened
    from episode_evidence
    inner join baseline
        on
            episode_evidence.feature_key = baseline.feature_key
            and episode_evidence.onset_date <= baseline.day
    group by all
),

high_sev_bugs as (
    select
        episode_evidence.feature_key,
        episode_evidence.problem,
        coalesce(sum(daily.n_s1_bugs_opened + daily.n_s2_bugs_opened), 0) as n_new_high_sev_bugs
    from episode_evidence
    cross join params
    left join daily
        on
            episode_evidence.feature_key = daily.feature_key
            and daily.day between episode_evidence.onset_date - 7 and params.as_of
    group by all
),

problems as (
    select unnest(['health', 'adoption']) as problem
),

today as (
    select evidence.*
    from evidence
    cross join params
    where evidence.day = params.as_of
),

final as (
    select
        params.as_of as as_of_date,
        today.feature_key,
        problems.problem,
        coalesce(episodes.is_open, false) as is_open,
        case
            when not coalesce(episodes.is_open, false) then 'none'
            when flags.is_evidence then 'active'
            else 'recovering'
        end as state,
        case
            when not coalesce(episodes.is_open, false) then null
            when problems.problem = 'adoption' then 'improve'
            when
                (
                    episode_evidence.had_usage_drop
                    and (high_sev_bugs.n_new_high_sev_bugs >= 1 or episode_evidence.had_ticket_excess)
                )
                or today.is_bug_cluster
                then 'fix'
            else 'investigate'
        end as kind,
        episode_evidence.onset_date,
        episodes.last_trigger_day,
        coalesce(episode_evidence.n_evidence_days, 0) as n_evidence_days,
        coalesce(episode_evidence.had_usage_drop, false) as had_usage_drop,
        coalesce(episode_evidence.had_ticket_excess, false) as had_ticket_excess,
        coalesce(episode_evidence.had_bug_cluster, false) as had_bug_cluster,
        coalesce(high_sev_bugs.n_new_high_sev_bugs, 0) as n_new_high_sev_bugs,
        since_onset.n_days_since_onset,
        since_onset.avg_daily_users,
        since_onset.avg_expected_users,
        since_onset.avg_expected_spread,
        since_onset.n_tickets as n_tickets_since_onset,
        since_onset.expected_tickets as expected_tickets_since_onset,
        today.drop_stat,
        today.recent_usage_rel,
        today.ticket_stat,
        today.share_7d,
        today.reference_share_7d,
        today.dau_mau,
        today.reference_dau_mau,
        today.events_per_user_7d,
        today.expected_events_per_user,
        coalesce(today.is_weak_share, false) as is_weak_share,
        coalesce(today.is_weak_stickiness, false) as is_weak_stickiness,
        coalesce(today.is_weak_frequency, false) as is_weak_frequency,
        today.is_reference_from_catalog,
        today.is_in_launch_ramp,
        today.launched_on,
        today.n_open_bugs,
        today.n_open_s1_bugs,
        today.n_open_s2_bugs,
        today.bug_load_score
    from today
    cross join params
    cross join problems
    left join flags
        on
            today.feature_key = flags.feature_key
            and today.day = flags.day
            and problems.problem = flags.problem
    left join episodes
        on today.feature_key = episodes.feature_key and problems.problem = episodes.problem
    left join episode_evidence
        on
            today.feature_key = episode_evidence.feature_key
            and problems.problem = episode_evidence.problem
    left join since_onset
        on
            today.feature_key = since_onset.feature_key
            and problems.problem = since_onset.problem
    left join high_sev_bugs
        on
            today.feature_key = high_sev_bugs.feature_key
            and problems.problem = high_sev_bugs.problem
)

select * from final
order by feature_key, problem
