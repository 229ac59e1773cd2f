"""The official OpenAI Python SDK against the routing gateway, unchanged.

Usage: openai_client.py GATEWAY_URL API_KEY. Exits non-zero on the first mismatch.
"""

import json
import sys

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
ask = [{"role": "user", "content": "Say hello to the mesh"}]

models = {m.id for m in client.models.list()}
assert {"sim-small", "sim-large"} <= models, models

reply = client.chat.completions.create(model="sim-small", messages=ask)
choice = reply.choices[0]
assert choice.finish_reason == "stop", choice
assert isinstance(choice.message.content, str) and choice.message.content, choice
assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0, reply.usage
assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

# Streaming: the same deterministic answer, in deltas, with usage at the end.
text, usage, finish = "", None, None
for chunk in client.chat.completions.create(
    model="sim-small", messages=ask, stream=True, stream_options={"include_usage": True}
):
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        text += c.delta.content or ""
        finish = c.finish_reason or finish
assert text == choice.message.content, (text, choice.message.content)
assert finish == "stop", finish
assert usage is not None and usage.completion_tokens == reply.usage.completion_tokens, usage

# Tool calls, then the answer to the tool's result.
tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}]
ask_tool = [{"role": "user", "content": "call get_weather for Paris"}]
reply = client.chat.completions.create(model="sim-small", messages=ask_tool, tools=tools)
choice = reply.choices[0]
assert choice.finish_reason == "tool_calls", choice
call = choice.message.tool_calls[0]
assert call.function.name == "get_weather", call
assert isinstance(json.loads(call.function.arguments)["city"], str), call
answer = client.chat.completions.create(
    model="sim-small",
    tools=tools,
    messages=ask_tool + [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "3 degrees, rain"},
    ],
)
assert answer.choices[0].finish_reason == "stop", answer
assert answer.choices[0].message.content, answer

# Streamed tool calls arrive as deltas the SDK's accumulator understands.
with client.chat.completions.stream(model="sim-small", messages=ask_tool, tools=tools) as stream:
    final = stream.get_final_completion()
streamed = final.choices[0].message.tool_calls[0]
assert streamed.function.name == "get_weather", final
assert isinstance(json.loads(streamed.function.arguments)["city"], str), final

# Structured output.
reply = client.chat.completions.create(
    model="sim-small",
    messages=[{"role": "user", "content": "Describe the mesh"}],
    response_format={
        "type": "json_schema",
        "json_schema": {
            "name": "summary",
            "schema": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "score": {"type": "integer"}},
                "required": ["title", "score"],
            },
        },
    },
)
shaped = json.loads(reply.choices[0].message.content)
assert isinstance(shaped["title"], str) and isinstance(shaped["score"], int), shaped

# Errors in OpenAI's shape, as the SDK's exception types.
try:
    client.chat.completions.create(model="no-such-model", messages=ask)
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert "sim-small" in e.message, e.message
try:
    client.chat.completions.create(model="sim-small", messages="not a list")
    raise AssertionError("a malformed body was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.message, e
try:
    openai.OpenAI(base_url=base + "/v1", api_key="mesh_wrong", max_retries=0).models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401, e

print("ok")
