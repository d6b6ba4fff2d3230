-- grain: one row per account that passed validation; key: account_key.
-- Rows quarantined by the stg_accounts suite in the latest validation are left out; they stay in
-- raw.* and quality.quarantine (with the reason) and come back when a newer version passes.
with

candidates as (
    select * from staging.stg_accounts__unvalidated
),

quarantined as (
    select record_key from quality.quarantine
    where stage = 'validate' and table_name = 'staging.stg_accounts'
),

final as (
    select candidates.* exclude (type_error)  -- noqa: RF03
    from candidates
    where not exists (
        select 1 from quarantined
        where quarantined.record_key = candidates.account_key
    )
)

select * from final
