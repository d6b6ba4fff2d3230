-- grain: one row per support ticket or conversation from every help desk, before validation; key: ticket_id ('<vendor>:<id>').
-- The canonical shape every vendor maps onto, so scores work whichever vendor a team uses.
-- type_error names the fields of a wrong JSON type (the suite quarantines those rows). A status or
-- priority outside the canonical sets becomes 'unknown' (the row is kept); the vendor's value,
-- redacted and cut short, stays in status_unknown / priority_unknown for the suite's warning.

normalised as (
    select
        * replace (
            case
                when status is null or status in (
                    'new', 'open', 'pending', 'hold', 'solved', 'closed', 'deleted'
                ) then status
                else 'unknown'
            end as status,
            case
                when priority is null or priority in ('urgent', 'high', 'normal', 'low')
                    then priority
                else 'unknown'
            end as priority
        ),
        case
            when status not in ('new', 'open', 'pending', 'hold', 'solved', 'closed', 'deleted')
                then enum_example(status)
        end as status_unknown,
        case
            when priority not in ('urgent', 'high', 'normal', 'low') then enum_example(priority)
        end as priority_unknown
    from unioned
)

select * from normalised
