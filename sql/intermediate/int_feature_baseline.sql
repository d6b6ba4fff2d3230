-- grain: one row per catalog feature x day for the 41 days up to as_of; key: (feature_key, day).
-- Each day's observation against the feature's own weekday-aware, robust baseline:
--   usage:   expected users = product actives that day x the median share of actives on the same
--            weekday over the 8 weeks before (>= 3 weeks needed; days before launch excluded);
--            spread = 1.4826 x MAD of those shares, floored by Poisson noise (sqrt(expected)) and
--            5 % of expected; z = (users - expected) / spread, capped to [-4, 4] so one odd day
--            cannot decide alone; rel = users / expected - 1.
--   tickets: expected tickets = the feature's tickets per user-day over days t-77 .. t-14
--            (9 weeks ending 2 weeks back, so a current spike does not raise its own baseline)
--            x the feature's users that day (exposure).
with

params as (
    select getvariable('as_of')::date as as_of
),

daily as (
    select feature_daily.*
    from marts.feature_daily
    cross join params
    where feature_daily.day <= params.as_of
),

features as (
    select
        dim_features.feature_key,
        coalesce(
            dim_features.launched_on,
            (
                select min(daily.day) from daily
                where daily.feature_key = dim_features.feature_key and daily.n_users > 0
            )
        ) as launched_on
    from marts.dim_features
),

judged as (
    select daily.*
    from daily
    cross join params
    where daily.day between params.as_of - 40 and params.as_of
),

same_weekday as (
    select
        judged.feature_key,
        judged.day,
        median(history.share_of_actives) as baseline_share,
        mad(history.share_of_actives) as baseline_share_mad,
        count(*) as n_baseline_weeks
    from judged
    inner join features on judged.feature_key = features.feature_key
    inner join daily as history
        on
            judged.feature_key = history.feature_key
            and history.day between judged.day - 56 and judged.day - 7
            and (judged.day - history.day) % 7 = 0
            and features.launched_on <= history.day
            and history.n_product_users > 0
    group by all
),

ticket_rate as (
    select
        judged.feature_key,
        judged.day,
        sum(history.n_tickets) as n_baseline_tickets,
        sum(history.n_users) as n_baseline_user_days
    from judged
    inner join daily as history
        on
            judged.feature_key = history.feature_key
            and history.day between judged.day - 77 and judged.day - 14
    group by all
),

expected as (
    select
        judged.feature_key,
        judged.day,
        judged.iso_weekday,
        judged.n_users,
        judged.n_product_users,
        judged.share_of_actives,
        judged.events_per_user,
        judged.n_tickets,
        judged.n_tickets_weighted,
        judged.n_s1_bugs_opened,
        judged.n_s2_bugs_opened,
        features.launched_on,
        coalesce(same_weekday.n_baseline_weeks, 0) as n_baseline_weeks,
        case
            when same_weekday.n_baseline_weeks >= 3
                then same_weekday.baseline_share * judged.n_product_users
        end as expected_users,
        case
            when same_weekday.n_baseline_weeks >= 3
                then greatest(
                    1.4826 * same_weekday.baseline_share_mad * judged.n_product_users,
                    sqrt(same_weekday.baseline_share * judged.n_product_users),
                    0.05 * same_weekday.baseline_share * judged.n_product_users,
                    1.0
                )
        end as expected_users_spread,
        case
            when ticket_rate.n_baseline_user_days >= 100
                then ticket_rate.n_baseline_tickets / ticket_rate.n_baseline_user_days
        end as tickets_per_user_day
    from judged
    inner join features on judged.feature_key = features.feature_key
    left join same_weekday
        on judged.feature_key = same_weekday.feature_key and judged.day = same_weekday.day
    left join ticket_rate
        on judged.feature_key = ticket_rate.feature_key and judged.day = ticket_rate.day
),

final as (
    select
        *,
        greatest(-4.0, least(4.0, (n_users - expected_users) / expected_users_spread))
            as usage_z,
        case when expected_users >= 1 then n_users / expected_users - 1 end as usage_rel,
        tickets_per_user_day * n_users as expected_tickets
    from expected
)

select * from final
order by feature_key, day
