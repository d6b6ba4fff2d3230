-- grain: one row per catalog feature x UTC day, from the first usage day to the last data day;
-- key: (feature_key, day). The daily rollup every score, detector and chart reads: usage, the
-- feature's share of product actives, engagement, priority-weighted tickets and new bugs by
-- severity. It does not depend on the as-of date (scores read the days up to theirs).
-- Usage comes from intermediate.int_feature_usage_daily (feature x day, maintained incrementally),
-- tickets and bugs (small) are counted here.
with

usage_daily as (
    select * from intermediate.int_feature_usage_daily
),

tickets as (
    select * from intermediate.int_tickets_mapped
    where feature_key is not null and not is_deleted
),

bugs as (
    select * from intermediate.int_bugs_mapped
    where feature_key is not null and not is_deleted
),

features as (
    select feature_key from marts.dim_features
),

days as (
    select unnest(
        generate_series(
            (select min(activity_date) from usage_daily),
            greatest(
                (select max(activity_date) from usage_daily),
                getvariable('as_of')::date
            ),
            interval 1 day
        )
    )::date as day
),

product as (
    select
        activity_date as day,
        n_users as n_product_users
    from usage_daily
    where feature_key = '__product__'
),

usage as (
    select
        feature_key,
        activity_date as day,
        n_users,
        n_accounts,
        n_events
    from usage_daily
    where feature_key <> '__product__'
),

tickets_daily as (
    select
        feature_key,
        created_at::date as day,
        count(*) as n_tickets,
        sum(priority_weight) as n_tickets_weighted,
        count(*) filter (where priority in ('urgent', 'high')) as n_tickets_urgent_high
    from tickets
    group by all
),

bugs_opened as (
    select
        feature_key,
        created_at::date as day,
        count(*) as n_bugs_opened,
        count(*) filter (where severity = 's1') as n_s1_bugs_opened,
        count(*) filter (where severity = 's2') as n_s2_bugs_opened
    from bugs
    group by all
),

bugs_closed as (
    select
        feature_key,
        closed_at::date as day,
        count(*) as n_bugs_closed
    from bugs
    where closed_at is not null
    group by all
),

final as (
    select
        features.feature_key,
        days.day,
        isodow(days.day) as iso_weekday,
        coalesce(usage.n_users, 0) as n_users,
        coalesce(product.n_product_users, 0) as n_product_users,
        coalesce(usage.n_users, 0) / nullif(product.n_product_users, 0) as share_of_actives,
        coalesce(usage.n_accounts, 0) as n_accounts,
        coalesce(usage.n_events, 0) as n_events,
        usage.n_events / nullif(usage.n_users, 0) as events_per_user,
        coalesce(tickets_daily.n_tickets, 0) as n_tickets,
        coalesce(tickets_daily.n_tickets_weighted, 0) as n_tickets_weighted,
        coalesce(tickets_daily.n_tickets_urgent_high, 0) as n_tickets_urgent_high,
        coalesce(bugs_opened.n_bugs_opened, 0) as n_bugs_opened,
        coalesce(bugs_opened.n_s1_bugs_opened, 0) as n_s1_bugs_opened,
        coalesce(bugs_opened.n_s2_bugs_opened, 0) as n_s2_bugs_opened,
        coalesce(bugs_closed.n_bugs_closed, 0) as n_bugs_closed
    from features
    cross join days
    left join product on days.day = product.day
    left join usage on features.feature_key = usage.feature_key and days.day = usage.day
    left join tickets_daily
        on features.feature_key = tickets_daily.feature_key and days.day = tickets_daily.day
    left join bugs_opened
        on features.feature_key = bugs_opened.feature_key and days.day = bugs_opened.day
    left join bugs_closed
        on features.feature_key = bugs_closed.feature_key and days.day = bugs_closed.day
)

select * from final
order by feature_key, day
