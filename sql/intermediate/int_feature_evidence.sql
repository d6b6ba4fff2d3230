-- grain: one row per catalog feature x day for the 28 days up to as_of; key: (feature_key, day).
-- Would a nightly run on that day have seen evidence of a problem? Computed from the data up to
-- that day only, so a backfill or a replay gives the same answer as the night itself.
--   usage drop:   scan statistic over the windows of 2..7 days ending that day (longer windows
--                 would add up the day-to-day autocorrelation of usage as if it were signal): the most
--                 negative sum(usage_z) / sqrt(n) at or below -drop_z, and the median usage_rel of
--                 the last 3 days at or below -min_drop (a drop that is still going on; one odd
--                 day neither starts nor keeps it). onset = the first day of the best window.
--   ticket excess: Poisson count test over the windows of 3..14 days ending that day, the
--                 window's busiest day counted as its second busiest (winsorised: one burst is
--                 not a trend): z = 2(sqrt(O + 3/8) -
--                 sqrt(E + 3/8)) (Anscombe) at or above ticket_z, with O >= min_tickets and
--                 O >= ticket_ratio x E; the last 3 days still at or above ticket_ratio x E.
--   bug load:     open bugs as of that day, weighted by severity (s1 8, s2 4, s3 2, s4 1) and age
--                 (up to x2 at 90 days), per 1,000 average daily users of the last 28 days; a
--                 bug cluster when its score 100 / (1 + load / 80) is under 35 with at least two
--                 open s1/s2 bugs.
--   weak share:   7-day share of product actives under weak_share_ratio x the reference share
--                 (the catalog's expected_daily_share, else the median 7-day share of the
--                 features), outside the launch ramp (launch_ramp_days after launch).
--   weak stickiness: DAU/MAU of the last 28 days under weak_stickiness_ratio x the catalog's
--                 expected_stickiness (only then: a feature used weekly by design would look
--                 weak next to daily ones; reference_dau_mau is shown); weak frequency: events
--                 per user-day of the last 7 days under half the catalog's
--                 expected_events_per_user (only when the catalog gives one).
with

params as (
    select
        getvariable('as_of')::date as as_of,
        getvariable('drop_z')::double as drop_z,
        getvariable('min_drop')::double as min_drop,
        getvariable('ticket_z')::double as ticket_z,
        getvariable('min_tickets')::integer as min_tickets,
        getvariable('ticket_ratio')::double as ticket_ratio,
        getvariable('weak_share_ratio')::double as weak_share_ratio,
        getvariable('launch_ramp_days')::integer as launch_ramp_days
),

baseline as (
    select * from intermediate.int_feature_baseline
),

features as (
    select * from marts.dim_features
),

days as (
    select
        baseline.feature_key,
        baseline.day
    from baseline
    cross join params
    where baseline.day between params.as_of - 27 and params.as_of
),

spans as (
    select unnest(range(2, 15)) as n_days
),

windows as (
    select
        days.feature_key,
        days.day,
        (days.day - history.day + 1)::integer as n_days,
        history.usage_z,
        history.n_tickets,
        history.expected_tickets
    from days
    inner join baseline as history
        on
            days.feature_key = history.feature_key
            and history.day between days.day - 13 and days.day
),

scans as (
    select
        windows.feature_key,
        windows.day,
        spans.n_days::integer as window_days,
        count(windows.usage_z) as n_z,
        sum(windows.usage_z::decimal(38, 10))::double / sqrt(spans.n_days) as drop_stat,
        (
            sum(windows.n_tickets) - max(windows.n_tickets)
            + list_sort(list(windows.n_tickets), 'DESC')[2]
        )::double as tickets_loo,
        sum(windows.expected_tickets::decimal(38, 10))::double as expected_tickets_loo,
        count(windows.expected_tickets) as n_expected
    from windows
    inner join spans
        on windows.n_days <= spans.n_days
    group by windows.feature_key, windows.day, spans.n_days
),

drop_best as (
    select
        feature_key,
        day,
        drop_stat,
        window_days as drop_window_days
    from scans
    where n_z = window_days and window_days <= 7
    qualify row_number() over (partition by feature_key, day order by drop_stat asc, window_days asc) = 1
),

ticket_scored as (
    select
        *,
        2 * (sqrt(tickets_loo + 0.375) - sqrt(expected_tickets_loo + 0.375)) as ticket_stat
    from scans
    where window_days >= 3 and n_expected = window_days
),

ticket_best as (
    select
        ticket_scored.feature_key,
        ticket_scored.day,
        ticket_scored.ticket_stat,
        ticket_scored.window_days as ticket_window_days,
        ticket_scored.tickets_loo,
        ticket_scored.expected_tickets_loo,
        ticket_scored.ticket_stat >= params.ticket_z
        and ticket_scored.tickets_loo >= params.min_tickets
        and ticket_scored.tickets_loo >= params.ticket_ratio * ticket_scored.expected_tickets_loo
            as is_ticket_significant
    from ticket_scored
    cross join params
    qualify row_number() over (
        partition by ticket_scored.feature_key, ticket_scored.day
        order by
            is_ticket_significant desc, ticket_scored.ticket_stat desc,
            ticket_scored.window_days asc
    ) = 1
),

recent as (
    select
        days.feature_key,
        days.day,
        median(history.usage_rel) as recent_usage_rel,
        sum(history.n_tickets) as recent_tickets,
        sum(history.expected_tickets::decimal(38, 10))::double as recent_expected_tickets
    from days
    inner join baseline as history
        on
            days.feature_key = history.feature_key
            and history.day between days.day - 2 and days.day
    group by all
),

shares as (
    select
        feature_daily.feature_key,
        feature_daily.day,
        sum(feature_daily.n_users) over last_week
        / nullif(sum(feature_daily.n_product_users) over last_week, 0) as share_7d,
        avg(feature_daily.n_users) over last_4_weeks as avg_daily_users_28d
    from marts.feature_daily
    cross join params
    where feature_daily.day between params.as_of - 60 and params.as_of
    window
        last_week as (
            partition by feature_daily.feature_key order by feature_daily.day
            rows between 6 preceding and current row
        ),
        last_4_weeks as (
            partition by feature_daily.feature_key order by feature_daily.day
            rows between 27 preceding and current row
        )
),

launch as (
    select
        feature_key,
        any_value(launched_on) as launched_on
    from baseline
    group by all
),

-- Monthly actives per feature and day without a 28-fold join: one bit per day of the 55 days up
-- to as_of (bit k = as_of - k) per feature user; a user is a monthly active on as_of - k when a
-- bit of k .. k + 27 is set. User-days and events come from the feature x day rollup.
user_months as (
    select
        user_days.feature_key,
        bit_or(1::ubigint << (params.as_of - user_days.activity_date)::ubigint) as active_bits
    from intermediate.int_feature_user_days as user_days
    cross join params
    where user_days.activity_date between params.as_of - 54 and params.as_of
    group by user_days.feature_key, user_days.user_key
),

month_offsets as (
    select unnest(range(0, 28))::integer as k
),

monthly_actives as (
    select
        user_months.feature_key,
        params.as_of - month_offsets.k as day,
        count(*) as n_mau
    from user_months
    cross join params
    cross join month_offsets
    where (user_months.active_bits >> month_offsets.k::ubigint) & ((1::ubigint << 28) - 1) != 0
    group by all
),

stickiness as (
    select
        days.feature_key,
        days.day,
        sum(usage_daily.n_users)::bigint / 28.0 / nullif(any_value(monthly_actives.n_mau), 0)
            as dau_mau,
        sum(usage_daily.n_events) filter (where usage_daily.activity_date > days.day - 7)
        / nullif(sum(usage_daily.n_users) filter (where usage_daily.activity_date > days.day - 7), 0)
            as events_per_user_7d
    from days
    inner join intermediate.int_feature_usage_daily as usage_daily
        on
            days.feature_key = usage_daily.feature_key
            and usage_daily.activity_date between days.day - 27 and days.day
    inner join monthly_actives
        on days.feature_key = monthly_actives.feature_key and days.day = monthly_actives.day
    group by all
),

reference as (
    select
        shares.day,
        median(shares.share_7d) as median_share_7d,
        median(stickiness.dau_mau) as median_dau_mau
    from shares
    inner join launch on shares.feature_key = launch.feature_key
    cross join params
    left join stickiness
        on shares.feature_key = stickiness.feature_key and shares.day = stickiness.day
    where shares.day - launch.launched_on >= params.launch_ramp_days
    group by all
),

bug_load as (
    select
        days.feature_key,
        days.day,
        count(bugs.issue_id) as n_open_bugs,
        count(bugs.issue_id) filter (where bugs.severity = 's1') as n_open_s1_bugs,
        count(bugs.issue_id) filter (where bugs.severity = 's2') as n_open_s2_bugs,
        coalesce(
            sum((bugs.severity_weight * (1 + least(days.day - bugs.created_at::date, 90) / 90.0))::decimal(38, 10))::double,
            0
        ) as bugs_weighted
    from days
    left join intermediate.int_bugs_mapped as bugs
        on
            days.feature_key = bugs.feature_key
            and not bugs.is_deleted
            and bugs.created_at::date <= days.day
            and (
                (bugs.closed_at is null and bugs.state = 'open')
                or bugs.closed_at::date > days.day
            )
    group by all
),

final as (
    select
        days.feature_key,
        days.day,
        drop_best.drop_stat,
        drop_best.drop_window_days,
        recent.recent_usage_rel,
        coalesce(
            drop_best.drop_stat <= -params.drop_z and recent.recent_usage_rel <= -params.min_drop,
            false
        ) as is_usage_drop,
        case
            when drop_best.drop_stat <= -params.drop_z
                then days.day - drop_best.drop_window_days + 1
        end as drop_onset,
        ticket_best.ticket_stat,
        ticket_best.ticket_window_days,
        ticket_best.tickets_loo,
        ticket_best.expected_tickets_loo,
        coalesce(
            ticket_best.is_ticket_significant
            and recent.recent_tickets >= params.ticket_ratio * recent.recent_expected_tickets
            and recent.recent_tickets >= 2,
            false
        ) as is_ticket_excess,
        case
            when ticket_best.is_ticket_significant
                then days.day - ticket_best.ticket_window_days + 1
        end as ticket_onset,
        bug_load.n_open_bugs,
        bug_load.n_open_s1_bugs,
        bug_load.n_open_s2_bugs,
        bug_load.bugs_weighted,
        1000 * bug_load.bugs_weighted / nullif(shares.avg_daily_users_28d, 0) as bug_load_per_1k,
        100 / (
            1 + coalesce(
                1000 * bug_load.bugs_weighted / nullif(shares.avg_daily_users_28d, 0),
                case when bug_load.bugs_weighted > 0 then 1e9 else 0 end
            ) / 80
        ) as bug_load_score,
        shares.share_7d,
        coalesce(features.expected_daily_share, reference.median_share_7d)
            as reference_share_7d,
        features.expected_daily_share is not null as is_reference_from_catalog,
        stickiness.dau_mau,
        coalesce(features.expected_stickiness, reference.median_dau_mau)
            as reference_dau_mau,
        stickiness.events_per_user_7d,
        features.expected_stickiness,
        features.expected_events_per_user,
        launch.launched_on,
        launch.launched_on is null or days.day - launch.launched_on < params.launch_ramp_days
            as is_in_launch_ramp
    from days
    cross join params
    inner join features on days.feature_key = features.feature_key
    left join drop_best on days.feature_key = drop_best.feature_key and days.day = drop_best.day
    left join ticket_best
        on days.feature_key = ticket_best.feature_key and days.day = ticket_best.day
    left join recent on days.feature_key = recent.feature_key and days.day = recent.day
    left join bug_load on days.feature_key = bug_load.feature_key and days.day = bug_load.day
    left join shares on days.feature_key = shares.feature_key and days.day = shares.day
    left join reference on days.day = reference.day
    left join stickiness on days.feature_key = stickiness.feature_key and days.day = stickiness.day
    left join launch on days.feature_key = launch.feature_key
)

select
    *,
    bug_load_score < 35 and n_open_s1_bugs + n_open_s2_bugs >= 2 as is_bug_cluster,
    not is_in_launch_ramp
    and share_7d < getvariable('weak_share_ratio')::double * reference_share_7d as is_weak_share,
    not is_in_launch_ramp
    and dau_mau < getvariable('weak_stickiness_ratio')::double * expected_stickiness
        as is_weak_stickiness,
    not is_in_launch_ramp
    and events_per_user_7d < 0.5 * expected_events_per_user as is_weak_frequency
from final
order by feature_key, day
