-- grain: one row per Zendesk ticket (latest version); key: ticket_id ('zendesk:<id>').
-- Subject and body are redacted at landing, API pages and export files alike (tasks/clients/
-- zendesk.py RECORD_SQL: fl_redact with the side-loaded people's names and e-mails; rows landed
-- before that were redacted in place once, redact_landed_rows). The requester becomes a salted
-- hash of the Zendesk requester_id.
with

source as (
    select * from raw.zendesk__tickets
),

renamed as (
    select
        'zendesk:' || ticket_id as ticket_id,
        'zendesk' as source,
        case
            when json_type(payload, '$.created_at') = 'VARCHAR'
                then try_cast(payload ->> 'created_at' as timestamptz)
        end as created_at,
        case
            when json_type(payload, '$.updated_at') = 'VARCHAR'
                then try_cast(payload ->> 'updated_at' as timestamptz)
        end as updated_at,
        lower(trim(payload ->> 'status')) as status,
        lower(trim(payload ->> 'priority')) as priority,
        lower(payload ->> '$.via.channel') as channel,
        payload ->> 'subject' as subject,
        payload ->> 'description' as body,
        coalesce(
            list_transform(
                try_cast(payload -> 'tags' as varchar[]), lambda tag: lower(trim(tag))
            ),
            []
        ) as tags,
        person_key('zendesk', payload ->> 'requester_id') as requester_key,
        case
            when payload ->> 'organization_id' is not null
                then 'zendesk_org:' || (payload ->> 'organization_id')
        end as account_key,
        coalesce(lower(payload ->> 'status') = 'deleted', false) as is_deleted,
        regexp_replace(
            payload ->> 'url',
            '^(https?://[^/]+)/api/v2/tickets/(\d+)\.json$',
            '\1/agent/tickets/\2'
        ) as url,
        nullif(concat_ws(
            ',',
            type_check_ts(payload, '$.created_at', 'created_at'),
            type_check_ts(payload, '$.updated_at', 'updated_at'),
            type_check(payload, '$.status', ['VARCHAR'], 'status'),
            type_check(payload, '$.priority', ['VARCHAR'], 'priority'),
            type_check(payload, '$.via', ['OBJECT'], 'via'),
            type_check(payload, '$.via.channel', ['VARCHAR'], 'via.channel'),
            type_check(payload, '$.subject', ['VARCHAR'], 'subject'),
            type_check(payload, '$.description', ['VARCHAR'], 'description'),
            type_check(payload, '$.tags', ['ARRAY'], 'tags'),
            type_check(payload, '$.requester_id', ['VARCHAR', 'BIGINT', 'UBIGINT'], 'requester_id'),
            type_check(payload, '$.organization_id', ['VARCHAR', 'BIGINT', 'UBIGINT'], 'organization_id')
        ), '') as type_error
    from source
)

select * from renamed
