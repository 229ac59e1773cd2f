"""The official A2A Python SDK against a mesh agent's A2A interface.

Usage: a2a_client.py AGENT_BASE_URL API_KEY AGENT_NAME. The agent is a planner; each
message becomes a mesh task. The client follows one as a stream (the SDK's default
when the card offers streaming) and polls another to the planner's answer. Exits
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
    SubscribeToTaskRequest,
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

        assert card.capabilities.streaming, card

        # Streaming: the task, then its updates, the answer before the final status.
        streaming = await create_client(card, client_config=ClientConfig(httpx_client=http))
        events = [
            e
            async for e in streaming.send_message(
                SendMessageRequest(
                    message=Message(
                        message_id=str(uuid.uuid4()),
                        role=Role.ROLE_USER,
                        parts=[Part(text="Plan a refactor of src/bar.ts")],
                    )
                )
            )
        ]
        kinds = [e.WhichOneof("payload") for e in events]
        assert kinds[0] == "task" and kinds[-1] == "status_update", kinds
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED, events[-1]
        streamed_id = events[0].task.id
        assert all(
            getattr(e, k).task_id == streamed_id for e, k in zip(events[1:], kinds[1:])
        ), events
        artifacts = [e.artifact_update.artifact for e in events if e.HasField("artifact_update")]
        assert len(artifacts) == 1, kinds
        assert "steps" in artifacts[0].parts[0].data.struct_value.fields, artifacts

        # A task that has ended cannot be subscribed to; GetTask reads it.
        try:
            async for _ in streaming.subscribe(SubscribeToTaskRequest(id=streamed_id)):
                pass
            raise AssertionError("subscribed to a task that had ended")
        except AssertionError:
            raise
        except Exception as e:  # the SDK's UnsupportedOperationError
            assert "ended" in str(e) or type(e).__name__ == "UnsupportedOperationError", repr(e)

        # Without streaming: sent, answered at once, then polled.
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
