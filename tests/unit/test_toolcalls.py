import pytest

from voxmesh.toolcalls import ToolCallParser, tools_system_prompt

QWEN_OUTPUT = ('Let me check. <tool_call>\n{"name": "lookup_order", "arguments": '
               '{"order_id": "1234"}}\n</tool_call>')


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_tool_call_is_split_from_speech_whatever_the_delta_size(chunk: int) -> None:
    parser = ToolCallParser()
    spoken = "".join(parser.push(QWEN_OUTPUT[i:i + chunk])
                     for i in range(0, len(QWEN_OUTPUT), chunk))
    spoken += parser.finish()
    assert spoken == "Let me check. "
    assert [(c.name, c.arguments, c.error) for c in parser.calls] == [
        ("lookup_order", {"order_id": "1234"}, "")]


def test_partial_tag_is_held_back_until_decided() -> None:
    parser = ToolCallParser()
    assert parser.push("Sure <tool") == "Sure "
    assert parser.push("box is ready.") == "<toolbox is ready."


@pytest.mark.parametrize(
    ("block", "name", "error"),
    [
        ('{"name": "f:", "arguments": {}}', "f", ""),  # llama.cpp's trailing-colon quirk
        ('{"name": "f", "arguments": "{\\"a\\": 1}"}', "f", ""),  # double-encoded arguments
        ('{"name": "f", "arguments": [1]}', "f", "arguments must be an object"),
        ("{not json", "", "tool call is not valid JSON"),
        ('{"arguments": {}}', "", "tool call needs a string 'name'"),
    ],
)
def test_malformed_calls_are_reported_not_raised(block: str, name: str, error: str) -> None:
    parser = ToolCallParser()
    parser.push(f"<tool_call>{block}</tool_call>")
    call = parser.calls[0]
    assert call.name == name and call.error.startswith(error)


def test_unclosed_call_at_end_of_stream_is_still_parsed() -> None:
    parser = ToolCallParser()
    parser.push('<tool_call>{"name": "f", "arguments": {"x": 1}}')
    assert parser.finish() == ""
    assert parser.calls[0].arguments == {"x": 1}


def test_tools_prompt_lists_every_tool() -> None:
    prompt = tools_system_prompt([{"name": "a", "parameters": {}}, {"name": "b"}])
    assert '"name": "a"' in prompt and '"name": "b"' in prompt and "<tool_call>" in prompt
    assert tools_system_prompt([]) == ""


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_bare_json_call_as_llama_cpp_prints_it(chunk: int) -> None:
    # Qwen's <tool_call> tags are special tokens that llama.cpp drops from the text.
    text = '{"name": "lookup_order", "arguments": {"order_id": "12}34"}}'
    parser = ToolCallParser()
    spoken = "".join(parser.push(text[i:i + chunk]) for i in range(0, len(text), chunk))
    spoken += parser.finish()
    assert spoken == ""
    assert parser.calls[0].arguments == {"order_id": "12}34"}


def test_json_that_is_not_a_call_is_spoken() -> None:
    parser = ToolCallParser()
    spoken = parser.push('{"price": 3} is the answer.') + parser.finish()
    assert spoken == '{"price": 3} is the answer.' and not parser.calls


def test_braces_later_in_a_reply_are_plain_text() -> None:
    parser = ToolCallParser()
    spoken = parser.push("Sure. ") + parser.push('{"name": "x", "arguments": {}}') + parser.finish()
    assert spoken == 'Sure. {"name": "x", "arguments": {}}' and not parser.calls
