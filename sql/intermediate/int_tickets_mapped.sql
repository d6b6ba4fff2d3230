-- grain: one row per support ticket; key: ticket_id. feature_key is null when no catalog rule matched.
-- A ticket tag wins over a subject keyword; among features, catalog order wins.
with

tickets as (
    select * from staging.stg_support_tickets
),

rules as (
    select * from marts.feature_rules
    where signal in ('ticket_tags', 'ticket_keywords')
),

matches as (
    select
        tickets.ticket_id,
        rules.feature_key,
        rules.feature_order,
        case rules.signal when 'ticket_tags' then 1 else 2 end as signal_rank
    from tickets
    inner join rules
        on
            (rules.signal = 'ticket_tags' and list_contains(tickets.tags, rules.pattern))
            or (
                rules.signal = 'ticket_keywords'
                and lower(tickets.subject) like '%' || rules.pattern || '%'
            )
),

first_match as (
    select
        ticket_id,
        feature_key
    from matches
    qualify row_number() over (partition by ticket_id order by signal_rank, feature_order, feature_key) = 1
),

final as (
    select
        tickets.*,
        first_match.feature_key,
        case tickets.priority
            when 'urgent' then 4.0
            when 'high' then 2.0
            when 'low' then 0.5
            else 1.0
        end as priority_weight
    from tickets
    left join first_match on tickets.ticket_id = first_match.ticket_id
)

select * from final
