-- grain: one row per Freshdesk ticket (latest version); key: ticket_id ('freshdesk:<id>').
-- Subject and description were redacted at landing (tasks/clients/freshdesk.py); the body is
-- description_text. Status and priority codes map to the canonical names; a custom status code
-- arrives as its number, for the quality gate to flag. The requester becomes a salted hash of
-- the Freshdesk requester_id. Spam counts as deleted: neither is a customer's support need.
with

source as (
    select * from raw.freshdesk__tickets
),

renamed as (
    select
        'freshdesk:' || ticket_id as ticket_id,
        'freshdesk' as source,
        case
            when json_type(payload, '$.created_at') = 'VARCHAR'
                then try_cast(payload ->> 'created_at' as timestamptz)
        end as created_at,
        case
            when json_type(payload, '$.updated_at') = 'VARCHAR'
                then try_cast(payload ->> 'updated_at' as timestamptz)
        end as updated_at,
        case trim(payload ->> 'status')
            when '2' then 'open'
            when '3' then 'pending'
            when '4' then 'solved'
            when '5' then 'closed'
            else lower(trim(payload ->> 'status'))
        end as status,
        case trim(payload ->> 'priority')
            when '1' then 'low'
            when '2' then 'normal'
            when '3' then 'high'
            when '4' then 'urgent'
            else lower(trim(payload ->> 'priority'))
        end as priority,
        case trim(payload ->> 'source')
            when '1' then 'email'
            when '2' then 'web'
            when '3' then 'phone'
            when '7' then 'chat'
            when '9' then 'web'
            when '10' then 'email'
            else lower(trim(payload ->> 'source'))
        end as channel,
        nullif(trim(payload ->> 'subject'), '') as subject,
        coalesce(
            nullif(trim(payload ->> 'description_text'), ''),
            nullif(trim(payload ->> 'description'), '')
        ) as body,
        coalesce(
            list_transform(
                try_cast(payload -> 'tags' as varchar[]), lambda tag: lower(trim(tag))
            ),
            []
        ) as tags,
        person_key('freshdesk', payload ->> 'requester_id') as requester_key,
        case
            when payload ->> 'company_id' is not null
                then 'freshdesk_company:' || (payload ->> 'company_id')
        end as account_key,
        coalesce(
            try_cast(payload ->> 'deleted' as boolean), false
        ) or coalesce(try_cast(payload ->> 'spam' as boolean), false) as is_deleted,
        getvariable('freshdesk_agent_url') || '/a/tickets/' || ticket_id as url,
        nullif(concat_ws(
            ',',
            type_check_ts(payload, '$.created_at', 'created_at'),
            type_check_ts(payload, '$.updated_at', 'updated_at'),
            type_check(payload, '$.status', ['VARCHAR', 'BIGINT', 'UBIGINT'], 'status'),
            type_check(payload, '$.priority', ['VARCHAR', 'BIGINT', 'UBIGINT'], 'priority'),
            type_check(payload, '$.source', ['VARCHAR', 'BIGINT', 'UBIGINT'], 'source'),
            type_check(payload, '$.subject', ['VARCHAR'], 'subject'),
            type_check(payload, '$.description_text', ['VARCHAR'], 'description_text'),
            type_check(payload, '$.description', ['VARCHAR'], 'description'),
            type_check(payload, '$.tags', ['ARRAY'], 'tags'),
            type_check(payload, '$.requester_id', ['VARCHAR', 'BIGINT', 'UBIGINT'], 'requester_id'),
            type_check(payload, '$.company_id', ['VARCHAR', 'BIGINT', 'UBIGINT'], 'company_id'),
            type_check(payload, '$.deleted', ['BOOLEAN'], 'deleted'),
            type_check(payload, '$.spam', ['BOOLEAN'], 'spam')
        ), '') as type_error
    from source
)

select * from renamed
