"""Drives Mistral's official Python SDK (`pip install mistralai`, 3.x: `mistralai.client`)
against a server, through every endpoint of issue 19 item 1, and prints what the SDK
decoded as one JSON document on stdout (each answer's `model_dump`, by alias).

Usage: python3 official_sdk.py BASE_URL API_KEY

The sequence (and each request) is the one `tests/suites/tests/official_sdk.rs` sends
with the Rust clients, so a deterministic server answers both the same. Any exception
(a refusal, an answer the SDK's models reject) ends the run with a non-zero status.
"""

import base64
import json
import struct
import sys
import time

from mistralai.client import Mistral


def pdf(pages: int) -> bytes:
    """A PDF of `pages` pages, as the Rust suites make it."""
    text = "%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    text += f"2 0 obj << /Type /Pages /Count {pages} /Kids [] >> endobj\n"
    for i in range(pages):
        text += f"{i + 3} 0 obj << /Type /Page /Parent 2 0 R >> endobj\n"
    return (text + "%%EOF\n").encode()


def wav(seconds: int) -> bytes:
    """A PCM WAV of `seconds` at 8 kHz, 16-bit mono."""
    data = 16_000 * seconds
    head = b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt "
    head += struct.pack("<IHHIIHH", 16, 1, 1, 8_000, 16_000, 2, 16)
    return head + b"data" + struct.pack("<I", data) + bytes(data)


def dump(value):
    return value.model_dump(mode="json", by_alias=True)


def main() -> None:
    url, key = sys.argv[1], sys.argv[2]
    client = Mistral(api_key=key, server_url=url)
    out = {}

    document = "data:application/pdf;base64," + base64.b64encode(pdf(4)).decode()
    out["ocr"] = dump(
        client.ocr.process(
            model="mistral-ocr-latest",
            document={"type": "document_url", "document_url": document},
            pages=[0, 2],
        )
    )
    out["classifications"] = dump(
        client.classifiers.classify(
            model="ft:classifier:intents",
            inputs=["where is my parcel?", "please refund the order"],
        )
    )
    out["chat_classifications"] = dump(
        client.classifiers.classify_chat(
            model="ft:classifier:intents",
            input=[
                {"messages": [{"role": "user", "content": "hello"},
                              {"role": "assistant", "content": "hi, how can I help?"}]},
                {"messages": [{"role": "user", "content": "cancel my subscription"}]},
            ],
        )
    )
    out["agent_completion"] = dump(
        client.agents.complete(
            agent_id="ag_0123",
            messages=[{"role": "user", "content": "Bonjour"}],
            max_tokens=5,
        )
    )
    start = client.beta.conversations.start(
        model="mistral-medium-latest", inputs="Who wrote Candide?"
    )
    out["conversation_start"] = dump(start)
    out["conversation_append"] = dump(
        client.beta.conversations.append(
            conversation_id=start.conversation_id,
            inputs="And Zadig?",
            completion_args={"max_tokens": 4},
        )
    )

    lines = [
        {"custom_id": f"q{i}",
         "body": {"model": "mistral-small-latest", "max_tokens": 3,
                  "messages": [{"role": "user", "content": f"question {i}"}]}}
        for i in range(3)
    ]
    jsonl = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    uploaded = client.files.upload(
        file={"file_name": "requests.jsonl", "content": jsonl.encode()}, purpose="batch"
    )
    out["file"] = dump(uploaded)
    job = client.batch.jobs.create(
        endpoint="/v1/chat/completions",
        input_files=[uploaded.id],
        model="mistral-small-latest",
    )
    deadline = time.monotonic() + 30
    while job.status not in ("SUCCESS", "FAILED", "TIMEOUT_EXCEEDED", "CANCELLED"):
        if time.monotonic() > deadline:
            raise SystemExit(f"the batch job is still {job.status}")
        time.sleep(0.05)
        job = client.batch.jobs.get(job_id=job.id)
    out["batch_job"] = dump(job)
    output = client.files.download(file_id=job.output_file)
    out["batch_output"] = [json.loads(line) for line in output.read().splitlines() if line.strip()]

    out["transcription"] = dump(
        client.audio.transcriptions.complete(
            model="voxtral-mini-latest",
            file={"file_name": "memo.wav", "content": wav(4)},
            language="fr",
            timestamp_granularities=["segment"],
        )
    )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
