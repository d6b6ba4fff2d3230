-- grain: one row per Intercom conversation (latest version); key: ticket_id ('intercom:<id>').
-- Title, subject and body were redacted at landing (tasks/clients/intercom.py) and source.body
-- is stored as plain text (HTML stripped there, before redaction). The requester is the user who
-- started the conversation, else its first contact, as a salted hash. Intercom has no deletion
-- feed, so is_deleted is always false; the conversation carries no company, so no account_key.
with

source as (
    select * from raw.intercom__conversations
),

renamed as (
    select
        'intercom:' || conversation_id as ticket_id,
        'intercom' as source,
        case
            when json_type(payload, '$.created_at') in ('UBIGINT', 'BIGINT')
                then epoch_ts(try_cast(payload ->> 'created_at' as double))
        end as created_at,
        case
            when json_type(payload, '$.updated_at') in ('UBIGINT', 'BIGINT')
                then epoch_ts(try_cast(payload ->> 'updated_at' as double))
        end as updated_at,
        -- older API versions only have the `open` flag
        lower(trim(coalesce(
            payload ->> 'state',
            case payload ->> 'open' when 'true' then 'open' when 'false' then 'closed' end
        ))) as vendor_state,
        lower(trim(payload ->> 'priority')) as vendor_priority,
        lower(trim(payload ->> '$.source.type')) as source_type,
        coalesce(
            nullif(trim(payload ->> 'title'), ''),
            nullif(trim(payload ->> '$.source.subject'), '')
        ) as subject,
        nullif(trim(payload ->> '$.source.body'), '') as body,
        coalesce(
            list_transform(
                json_extract_string(payload, '$.tags.tags[*].name'),
                lambda tag: lower(trim(tag))
            ),
            []
        ) as tags,
        person_key(
            'intercom',
            coalesce(
                case
                    when payload ->> '$.source.author.type' in ('user', 'lead', 'contact')
                        then payload ->> '$.source.author.id'
                end,
                payload ->> '$.contacts.contacts[0].id'
            )
        ) as requester_key,
        getvariable('intercom_inbox_url') || '/conversation/' || conversation_id as url,
        nullif(concat_ws(
            ',',
            type_check_epoch(payload, '$.created_at', ['BIGINT', 'UBIGINT'], 'created_at'),
            type_check_epoch(payload, '$.updated_at', ['BIGINT', 'UBIGINT'], 'updated_at'),
            type_check(payload, '$.state', ['VARCHAR'], 'state'),
            type_check(payload, '$.open', ['BOOLEAN'], 'open'),
            type_check(payload, '$.priority', ['VARCHAR'], 'priority'),
            type_check(payload, '$.title', ['VARCHAR'], 'title'),
            type_check(payload, '$.source', ['OBJECT'], 'source'),
            type_check(payload, '$.source.type', ['VARCHAR'], 'source.type'),
            type_check(payload, '$.source.subject', ['VARCHAR'], 'source.subject'),
            type_check(payload, '$.source.body', ['VARCHAR'], 'source.body'),
            type_check(payload, '$.tags', ['OBJECT'], 'tags'),
            type_check(payload, '$.tags.tags', ['ARRAY'], 'tags.tags')
        ), '') as type_error
    from source
),

normalised as (
    select
        ticket_id,
        source,
        created_at,
        updated_at,
        -- snoozed: set aside until a date or a reply, like a pending ticket
        case vendor_state when 'snoozed' then 'pending' else vendor_state end as status,
        case vendor_priority
            when 'priority' then 'high'
            when 'not_priority' then 'normal'
            else vendor_priority
        end as priority,
        case source_type when 'conversation' then 'chat' else source_type end as channel,
        subject,
        body,
        tags,
        requester_key,
        null::varchar as account_key,
        false as is_deleted,
        url,
        type_error
    from renamed
)

select * from normalised
