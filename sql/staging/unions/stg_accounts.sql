-- grain: one row per account from every accounts source, before validation; key: account_key
-- (the key the usage events carry: PostHog $groups.company, Amplitude/Mixpanel company).
-- Revenue (arr, currency-agnostic) and segments, to weight priorities. No account name: it
-- stays in raw and staging.stg_accounts__accounts. Empty when no accounts source is configured,
-- so downstream SQL can always left-join it.

select * from unioned
