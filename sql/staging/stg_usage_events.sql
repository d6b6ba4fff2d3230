-- grain: one row per usage event from every analytics vendor that passed validation; key: event_id.
-- Rows quarantined by the stg_usage_events suite in the latest validation are left out; they stay in
-- raw.* and quality.quarantine (with the reason) and come back when a newer version passes.
with

candidates as (
    select * from staging.stg_usage_events__unvalidated
),

quarantined as (
    select record_key from quality.quarantine
    where stage = 'validate' and table_name = 'staging.stg_usage_events'
),

final as (
    select candidates.* exclude (type_error)  -- noqa: RF03
    from candidates
    where not exists (
        select 1 from quarantined
        where quarantined.record_key = candidates.event_id
    )
)

select * from final
