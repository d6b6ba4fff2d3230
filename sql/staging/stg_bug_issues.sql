-- grain: one row per bug-tracker issue from every tracker that passed validation; key: issue_id.
-- Rows quarantined by the stg_bug_issues suite in the latest validation are left out; they stay in
-- raw.* and quality.quarantine (with the reason) and come back when a newer version passes.
with

candidates as (
    select * from staging.stg_bug_issues__unvalidated
),

quarantined as (
    select record_key from quality.quarantine
    where stage = 'validate' and table_name = 'staging.stg_bug_issues'
),

final as (
    select candidates.* exclude (type_error, state_unknown, severity_unknown)  -- noqa: RF03
    from candidates
    where not exists (
        select 1 from quarantined
        where quarantined.record_key = candidates.issue_id
    )
)

select * from final
