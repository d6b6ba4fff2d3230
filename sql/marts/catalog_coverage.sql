-- grain: one row per signal kind (events, tickets, bugs); key: signal.
-- Share of records the feature catalog maps, and the biggest unmapped cluster to add next.
-- Events count by their n_events weight (a PostHog daily group stands for its events), read from
-- intermediate.int_event_coverage_days (day x event x path root x feature, maintained incrementally).
with

events as (
    -- the per-day rollup (intermediate.int_event_coverage_days), not every event
    select
        feature_key,
        event_name,
        path_root,
        n_events
    from intermediate.int_event_coverage_days
),

unmapped_events as (
    select
        event_name || ' ' || path_root as cluster,
        sum(n_events)::bigint as n
    from events
    where feature_key is null
    group by all
    order by n desc, cluster asc
    limit 3
),

tickets as (
    select
        feature_key,
        coalesce(tags[1], '(no tag)') as cluster
    from intermediate.int_tickets_mapped
    where not is_deleted
),

unmapped_tickets as (
    select
        cluster,
        count(*) as n
    from tickets
    where feature_key is null
    group by all
    order by n desc, cluster asc
    limit 3
),

bugs as (
    select
        feature_key,
        coalesce(labels[1], '(no label)') as cluster
    from intermediate.int_bugs_mapped
),

unmapped_bugs as (
    select
        cluster,
        count(*) as n
    from bugs
    where feature_key is null
    group by all
    order by n desc, cluster asc
    limit 3
),

final as (
    select
        'events' as signal,
        coalesce(sum(n_events), 0)::bigint as n_records,
        coalesce(sum(n_events) filter (where feature_key is not null), 0)::bigint as n_mapped,
        (select string_agg(cluster || ' (' || n || ')', '; ' order by n desc, cluster asc) from unmapped_events)
            as top_unmapped
    from events
    union all
    select
        'tickets',
        count(*),
        count(feature_key),
        (select string_agg(cluster || ' (' || n || ')', '; ' order by n desc, cluster asc) from unmapped_tickets)
    from tickets
    union all
    select
        'bugs',
        count(*),
        count(feature_key),
        (select string_agg(cluster || ' (' || n || ')', '; ' order by n desc, cluster asc) from unmapped_bugs)
    from bugs
)

select
    signal,
    n_records,
    n_mapped,
    round(n_mapped / nullif(n_records, 0), 4) as mapped_share,
    top_unmapped
from final
