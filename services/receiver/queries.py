"""Every SQL statement of the receiver, together (the role may only insert the content columns of
input_sms, read back uuid, source and client_event_id, and read settings: db/init/0004, 0009).

The uuid of each row is made by the database's `uuid_generate_v7()` (the column's default
function) inside the inserting statement, from the database clock (SPEC §2; docs/architecture.md,
"Time-ordered keys made by the database"). It is called in the statement rather than left to the
column default so that each row of a multi-row INSERT can be matched to the request that sent it
through its position: INSERT ... RETURNING does not promise any order, so the statement returns
(position, uuid) pairs joined on the uuid itself. A row skipped by ON CONFLICT (a repeated
delivery) comes back with a NULL uuid. The role may not write the uuid column, so that statement
is the database function `store_input_sms` (db/init/0009), which runs as the schema owner.
"""

from __future__ import annotations

from typing import Final

INSERT_SMS: Final = """
SELECT item_position AS position, sms_uuid AS uuid
FROM store_input_sms($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[])
"""

# A batch without a key (SPEC §4.2): no row can conflict, so the statement skips ON CONFLICT and
# the join that tells skipped rows apart, and the batch's one source is a parameter rather than
# an array of a thousand copies. The items go as one JSON document (db/init/0011, store_input_items:
# cheaper to write than three arrays) and the uuids come back as one array, in the items' order.
INSERT_ITEMS: Final = "SELECT store_input_items($1::jsonb, $2::text)"

# The rows of earlier deliveries with these keys (committed: read after our own commit).
SELECT_DELIVERIES: Final = """
SELECT delivery.position, input_sms.uuid
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS delivery (source, client_event_id, position)
JOIN input_sms USING (source, client_event_id)
ORDER BY delivery.position
"""
