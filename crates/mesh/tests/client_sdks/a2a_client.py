"""The official A2A Python SDK against a mesh agent's A2A interface.

Usage: a2a_client.py AGENT_BASE_URL API_KEY AGENT_NAME. The agent is a planner; the
message becomes a mesh task, and the client polls it to the planner's answer. Exits
non-zero on the first mismatch.
"""

import asyncio
import sys
import uuid

import httpx
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.types import (
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    TaskState,
)

base, key, agent_name = sys.argv[1], sys.argv[2], sys.argv[3]
DONE = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_REJECTED,
}


async def main():
    async with httpx.AsyncClient(headers={"Authorization": "Bearer " + key}, timeout=30) as http:
        card = await A2ACardResolver(http, base).get_agent_card()
        assert card.name == agent_name, card
        assert card.supported_interfaces, card

        client = await create_client(card, client_config=ClientConfig(streaming=False, httpx_client=http))
        message = Message(
            message_id=str(uuid.uuid4()),
            role=Role.ROLE_USER,
            parts=[Part(text="Plan a refactor of src/foo.ts")],
        )
        request = SendMessageRequest(
            message=message, configuration=SendMessageConfiguration(return_immediately=True)
        )
        responses = [r async for r in client.send_message(request)]
        assert responses and responses[-1].HasField("task"), responses
        task_id = responses[-1].task.id

        for _ in range(240):
            task = await client.get_task(GetTaskRequest(id=task_id))
            if task.status.state in DONE:
                break
            await asyncio.sleep(0.25)
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
        answer = [part for artifact in task.artifacts for part in artifact.parts]
        assert answer, task
        assert any("steps" in part.data.struct_value.fields for part in answer), answer

        try:
            await client.get_task(GetTaskRequest(id=str(uuid.uuid4())))
            raise AssertionError("an unknown task was found")
        except Exception as e:  # the SDK's TaskNotFoundError; its module moves between releases
            assert "not found" in str(e).lower() or type(e).__name__ == "TaskNotFoundError", repr(e)


asyncio.run(main())
print("ok")
