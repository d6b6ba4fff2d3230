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
        catalog_version
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
            sum(severity_weight * (1 + least(as_of - created_at::date, 90) / 90.0))
            filter (where is_open_as_of),
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
        coalesce(bugs.n_new_high_sev_bugs_14d, 0) as n_new_high_sev_bugs_14d
    from features
    cross join params
    left join product on true
    left join usage on features.feature_key = usage.feature_key
    left join daily_users on features.feature_key = daily_users.feature_key
    left join retention on features.feature_key = retention.feature_key
    left join trend on features.feature_key = trend.feature_key
    left join tickets on features.feature_key = tickets.feature_key
    left join bugs on features.feature_key = bugs.feature_key
)

select * from final
