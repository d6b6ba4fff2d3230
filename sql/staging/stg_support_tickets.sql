-- grain: one row per support ticket or conversation from every help desk that passed validation; key: ticket_id.
-- Rows quarantined by the stg_support_tickets suite in the latest validation are left out; they stay in
-- raw.* and quality.quarantine (with the reason) and come back when a newer version passes.
with

candidates as (
    select * from staging.stg_support_tickets__unvalidated
),

quarantined as (
    select record_key from quality.quarantine
    where stage = 'validate' and table_name = 'staging.stg_support_tickets'
),

final as (
    select candidates.* exclude (type_error, status_unknown, priority_unknown)  -- noqa: RF03
    from candidates
    where not exists (
        select 1 from quarantined
        where quarantined.record_key = candidates.ticket_id
    )
)

select * from final
