"""Testing an Action handler with the testing kit, shown in docs/actions.md.

tests/test_actions_docs.py runs these checks against examples/snippets/actions.py.
"""

import httpx

from fastapi_workos_authkit.testing import (
    signed_action_request,
    user_registration_action,
    verify_action_response,
)


# --8<-- [start:test]
async def check_free_mail_is_refused(client: httpx.AsyncClient, action_secret: str) -> None:
    payload = user_registration_action("someone@gmail.com")  # a realistic WorkOS request
    body, headers = signed_action_request(payload, action_secret)  # signed as WorkOS signs it
    reply = await client.post("/workos/action", content=body, headers=headers)

    assert reply.status_code == 200
    checked = verify_action_response(reply.content, action_secret)  # checks the signature too
    assert checked.payload.verdict == "Deny"
    assert checked.payload.error_message == "Please use your corporate email address"


# --8<-- [end:test]
