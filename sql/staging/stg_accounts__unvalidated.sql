-- Written by `make generated` (tasks/unions.py): a CTE per accounts vendor of tasks/sources.py,
-- the rest from sql/staging/unions/stg_accounts.sql. Edit those, not this file.
-- grain: one row per account from every accounts source, before validation; key: account_key
-- (the key the usage events carry: PostHog $groups.company, Amplitude/Mixpanel company).
-- Revenue (arr, currency-agnostic) and segments, to weight priorities. No account name: it
-- stays in raw and staging.stg_accounts__accounts. Empty when no accounts source is configured,
-- so downstream SQL can always left-join it.
with

accounts as (
    select
        account_key,
        arr,
        plan,
        segment,
        updated_at,
        source,
        type_error
    from staging.stg_accounts__accounts
),

unioned as (
    select * from accounts
)

select * from unioned
