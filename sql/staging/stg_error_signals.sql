-- grain: one row per error-tracker issue (Sentry); key: issue_id ('sentry:<id>').
-- The error signal per feature: counts of events and affected users, where it happens.
with

sentry as (
    select
        issue_id,
        source,
        url,
        title,
        culprit,
        level,
        status,
        n_events,
        n_users,
        first_seen_at,
        last_seen_at,
        url_path,
        components,
        is_deleted,
        type_error
    from staging.stg_sentry__issues
)

select * from sentry
