-- grain: one row per catalog feature as of getvariable('as_of'); key: feature_key.
-- The raw measurements behind the health components (counts, rates, deltas), before scoring.
-- Windows: current = the last window_days days up to as_of; previous = the window before it;
-- trend = mean weekly users of the last 2 weeks against the median of the 4 weeks before.
with

params as (
    select
        getvariable('as_of')::date as as_of,
        getvariable('window_days')::integer as w
),

user_days as (
    select
        user_days.*,
        params.as_of,
        params.w
    from intermediate.int_feature_user_days as user_days
    cross join params
),

features as (
    select
        feature_key,
        feature_name,
        catalog_version,
        expected_stickiness,
        expected_events_per_user
    from marts.dim_features
),

current_users as (
    select distinct
        feature_key,
        user_key,
        account_key
    from user_days
    where activity_date between as_of - w + 1 and as_of
),

previous_users as (
    select distinct
        feature_key,
        user_key
    from user_days
    where activity_date between as_of - 2 * w + 1 and as_of - w
),

usage as (
    select
        feature_key,
        count(distinct user_key) as n_users,
        count(distinct account_key) as n_accounts
    from current_users
    group by all
),

daily_users as (
    select
        feature_key,
        count(*) / any_value(w)::double as avg_daily_users
    from user_days
    where activity_date between as_of - w + 1 and as_of
    group by all
),

retention as (
    select
        previous_users.feature_key,
        count(*) as n_previous_users,
        count(current_users.user_key) as n_retained_users
    from previous_users
    left join current_users
        on
            previous_users.feature_key = current_users.feature_key
            and previous_users.user_key = current_users.user_key
    group by all
),

weeks as (
    select
        features.feature_key,
        unnest(range(0, 6)) as weeks_ago
    from features
),

weekly_active as (
    select
        feature_key,
        ((as_of - activity_date) // 7)::bigint as weeks_ago,
        count(distinct user_key) as wau
    from user_days
    where activity_date between as_of - 41 and as_of
    group by all
),

trend as (
    select
        weeks.feature_key,
        avg(coalesce(weekly_active.wau, 0)) filter (where weeks.weeks_ago < 2) as recent_wau,
        median(coalesce(weekly_active.wau, 0)) filter (where weeks.weeks_ago >= 2)
            as baseline_wau
    from weeks
    left join weekly_active
        on
            weeks.feature_key = weekly_active.feature_key
            and weeks.weeks_ago = weekly_active.weeks_ago
    group by all
),

tickets as (
    select
        tickets.feature_key,
        count(*) filter (where created_at::date between as_of - w + 1 and as_of)
            as n_tickets_window,
        coalesce(
            sum(priority_weight) filter (where created_at::date between as_of - w + 1 and as_of),
            0
        ) as n_tickets_weighted_window,
        count(*) filter (where created_at::date between as_of - 13 and as_of) as n_tickets_14d,
        count(*) filter (where created_at::date between as_of - 41 and as_of - 14)
            as n_tickets_prior_28d
    from intermediate.int_tickets_mapped as tickets
    cross join params
    where tickets.feature_key is not null and not tickets.is_deleted
    group by all
),

bugs_asof as (
    select
        bugs.*,
        params.as_of,
        bugs.created_at::date <= params.as_of
        and not bugs.is_deleted
        and (
            (bugs.closed_at is null and bugs.state = 'open')
            or bugs.closed_at::date > params.as_of
        ) as is_open_as_of
    from intermediate.int_bugs_mapped as bugs
    cross join params
    where bugs.feature_key is not null
),

bugs as (
    select
        feature_key,
        count(*) filter (where is_open_as_of) as n_open_bugs,
        count(*) filter (where is_open_as_of and severity in ('s1', 's2'))
            as n_open_high_sev_bugs,
        coalesce(
            (
                sum((severity_weight * (1 + least(as_of - created_at::date, 90) / 90.0))::decimal(38, 10))
                filter (where is_open_as_of)
            )::double,
            0
        ) as n_bugs_weighted,
        count(*) filter (
            where severity in ('s1', 's2')
            and created_at::date between as_of - 13 and as_of
        ) as n_new_high_sev_bugs_14d
    from bugs_asof
    group by all
),

product as (
    select n_users as n_product_users from usage
    where feature_key = '__product__'
),

last_week_vs_baseline as (
    select
        baseline.feature_key,
        sum(baseline.n_users) / nullif(sum(baseline.expected_users::decimal(38, 10))::double, 0) - 1
            as usage_vs_baseline_7d,
        sum(baseline.expected_users::decimal(38, 10))::double / 7 as expected_daily_users_7d
    from intermediate.int_feature_baseline as baseline
    cross join params
    where baseline.day between params.as_of - 6 and params.as_of
    group by all
    having count(baseline.expected_users) = 7
),

health_problem as (
    select * from intermediate.int_feature_problems
    where problem = 'health'
),

adoption_problem as (
    select * from intermediate.int_feature_problems
    where problem = 'adoption'
),

today as (
    select evidence.*
    from intermediate.int_feature_evidence as evidence
    cross join params
    where evidence.day = params.as_of
),

engagement as (
    select
        daily_users.feature_key,
        sum(feature_daily.n_events) / nullif(sum(feature_daily.n_users), 0) as events_per_user
    from daily_users
    cross join params
    left join marts.feature_daily
        on
            daily_users.feature_key = feature_daily.feature_key
            and feature_daily.day between params.as_of - params.w + 1 and params.as_of
    group by all
),

accounts as (
    select * from staging.stg_accounts
),

arr as (
    select
        current_users.feature_key,
        avg(accounts.arr::decimal(38, 10))::double as avg_user_arr
    from current_users
    inner join accounts on current_users.account_key = accounts.account_key
    group by all
),

arr_accounts as (
    select
        feature_accounts.feature_key,
        count(*) as n_accounts_with_arr,
        sum(accounts.arr::decimal(38, 10))::double as arr_of_accounts
    from (select distinct
        feature_key,
        account_key
    from current_users) as feature_accounts
    inner join accounts on feature_accounts.account_key = accounts.account_key
    group by all
),

product_arr as (
    select avg(accounts.arr::decimal(38, 10))::double as avg_account_arr
    from current_users
    inner join accounts on current_users.account_key = accounts.account_key
    where current_users.feature_key = '__product__'
),

final as (
    select
        params.as_of as as_of_date,
        params.w as window_days,
        features.feature_key,
        features.feature_name,
        features.catalog_version,
        coalesce(usage.n_users, 0) as n_users,
        coalesce(usage.n_accounts, 0) as n_accounts,
        coalesce(product.n_product_users, 0) as n_product_users,
        coalesce(daily_users.avg_daily_users, 0) as avg_daily_users,
        coalesce(retention.n_previous_users, 0) as n_previous_users,
        coalesce(retention.n_retained_users, 0) as n_retained_users,
        coalesce(trend.recent_wau, 0) as recent_wau,
        coalesce(trend.baseline_wau, 0) as baseline_wau,
        coalesce(tickets.n_tickets_window, 0) as n_tickets_window,
        coalesce(tickets.n_tickets_weighted_window, 0) as n_tickets_weighted_window,
        coalesce(tickets.n_tickets_14d, 0) as n_tickets_14d,
        coalesce(tickets.n_tickets_prior_28d, 0) as n_tickets_prior_28d,
        coalesce(bugs.n_open_bugs, 0) as n_open_bugs,
        coalesce(bugs.n_open_high_sev_bugs, 0) as n_open_high_sev_bugs,
        coalesce(bugs.n_bugs_weighted, 0) as n_bugs_weighted,
        coalesce(bugs.n_new_high_sev_bugs_14d, 0) as n_new_high_sev_bugs_14d,
        today.dau_mau as stickiness,
        engagement.events_per_user,
        last_week_vs_baseline.usage_vs_baseline_7d,
        last_week_vs_baseline.expected_daily_users_7d,
        today.reference_dau_mau as reference_stickiness,
        features.expected_stickiness is not null as is_stickiness_from_catalog,
        features.expected_events_per_user,
        today.share_7d,
        today.reference_share_7d,
        today.is_reference_from_catalog,
        today.is_in_launch_ramp,
        today.launched_on,
        today.ticket_stat,
        today.tickets_loo,
        today.expected_tickets_loo,
        today.n_open_s1_bugs,
        today.n_open_s2_bugs,
        today.bug_load_per_1k,
        today.bug_load_score,
        health_problem.is_open as is_health_problem,
        health_problem.kind as health_kind,
        health_problem.state as health_state,
        health_problem.onset_date as health_onset_date,
        health_problem.had_usage_drop,
        health_problem.had_ticket_excess,
        health_problem.n_new_high_sev_bugs as n_new_high_sev_bugs_since_onset,
        health_problem.n_days_since_onset,
        health_problem.avg_daily_users as avg_daily_users_since_onset,
        health_problem.avg_expected_users as expected_daily_users_since_onset,
        health_problem.avg_expected_spread as expected_daily_users_spread,
        health_problem.n_tickets_since_onset,
        health_problem.expected_tickets_since_onset,
        adoption_problem.is_open as is_adoption_problem,
        adoption_problem.state as adoption_state,
        adoption_problem.onset_date as adoption_onset_date,
        coalesce(arr_accounts.n_accounts_with_arr, 0) as n_accounts_with_arr,
        arr_accounts.arr_of_accounts,
        arr.avg_user_arr / nullif(product_arr.avg_account_arr, 0) as arr_factor
    from features
    cross join params
    left join product on true
    left join usage on features.feature_key = usage.feature_key
    left join daily_users on features.feature_key = daily_users.feature_key
    left join retention on features.feature_key = retention.feature_key
    left join trend on features.feature_key = trend.feature_key
    left join tickets on features.feature_key = tickets.feature_key
    left join bugs on features.feature_key = bugs.feature_key
    left join engagement on features.feature_key = engagement.feature_key
    left join last_week_vs_baseline on features.feature_key = last_week_vs_baseline.feature_key
    left join today on features.feature_key = today.feature_key
    left join health_problem on features.feature_key = health_problem.feature_key
    left join adoption_problem on features.feature_key = adoption_problem.feature_key
    left join arr on features.feature_key = arr.feature_key
    left join arr_accounts on features.feature_key = arr_accounts.feature_key
    cross join product_arr
)

select * from final
