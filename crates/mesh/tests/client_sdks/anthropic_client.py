"""The official Anthropic Python SDK against the routing gateway's Messages API.

Usage: anthropic_client.py GATEWAY_URL API_KEY. Exits non-zero on the first mismatch.
"""

import sys

import anthropic

base, key = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
ask = [{"role": "user", "content": "Say hello to the mesh"}]

message = client.messages.create(model="sim-small", max_tokens=200, messages=ask)
assert message.role == "assistant" and message.stop_reason == "end_turn", message
assert message.content[0].type == "text" and message.content[0].text, message
assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage

with client.messages.stream(model="sim-small", max_tokens=200, messages=ask) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text == message.content[0].text, (text, message.content[0].text)
assert final.stop_reason == "end_turn", final
assert final.usage.output_tokens == message.usage.output_tokens, final.usage

tools = [{
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}]
ask_tool = [{"role": "user", "content": "call get_weather for Paris"}]
message = client.messages.create(model="sim-small", max_tokens=200, messages=ask_tool, tools=tools)
assert message.stop_reason == "tool_use", message
use = next(block for block in message.content if block.type == "tool_use")
assert use.name == "get_weather" and isinstance(use.input["city"], str), use
answer = client.messages.create(
    model="sim-small",
    max_tokens=200,
    tools=tools,
    messages=ask_tool + [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "3 degrees"}]},
    ],
)
assert answer.stop_reason == "end_turn" and answer.content[0].text, answer

# Streamed tool use: the SDK assembles the input from its JSON deltas.
with client.messages.stream(model="sim-small", max_tokens=200, messages=ask_tool, tools=tools) as stream:
    final = stream.get_final_message()
use = next(block for block in final.content if block.type == "tool_use")
assert use.name == "get_weather" and isinstance(use.input["city"], str), final

try:
    client.messages.create(model="no-such-model", max_tokens=10, messages=ask)
    raise AssertionError("an unknown model was accepted")
except anthropic.NotFoundError as e:
    assert e.status_code == 404, e

print("ok")
