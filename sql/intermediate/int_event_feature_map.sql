-- grain: one row per distinct (event_name, url_path) seen in staging; key: (event_name, url_path).
-- Maps each pair to its feature once, so the big event table joins on equality, not on LIKE.
-- Incremental like int_feature_user_days: with rollup_days (and rollup_loads) set, only the
-- pairs of those days (new pairs are added to the table, known ones kept).
with

pairs as (
    select distinct
        coalesce(event_name, '') as event_name,
        coalesce(url_path, '') as url_path
    from staging.stg_usage_events
    where in_rollup_scope(occurred_at::date, ingested_at)
),

rules as (
    select * from marts.feature_rules
    where signal in ('events', 'paths')
),

matches as (
    select
        pairs.event_name,
        pairs.url_path,
        rules.feature_key,
        rules.feature_order,
        case rules.signal when 'events' then 1 else 2 end as signal_rank
    from pairs
    inner join rules
        on (
            rules.signal = 'events'
            and lower(pairs.event_name) like glob_to_like(rules.pattern) escape '\'
        )
        or (
            rules.signal = 'paths'
            and lower(pairs.url_path) like glob_to_like(rules.pattern) escape '\'
        )
),

first_match as (
    select
        event_name,
        url_path,
        feature_key
    from matches
    qualify row_number() over (
        partition by event_name, url_path order by feature_order, signal_rank, feature_key
    ) = 1
),

final as (
    select
        pairs.event_name,
        pairs.url_path,
        first_match.feature_key
    from pairs
    left join first_match
        on pairs.event_name = first_match.event_name and pairs.url_path = first_match.url_path
)

select * from final
