#!/usr/bin/env python3
"""An outside Kafka client for testlake's secured-Kafka tests: PyPI confluent-kafka produces
every line of a JSON-lines file to a topic, configured from a librdkafka properties file (the
same file `testlake --kafka-properties` reads), and exits non-zero unless every message was
delivered.

    kafka_produce.py --properties FILE --topic TOPIC --file EVENTS.jsonl
"""

import argparse
import sys

from confluent_kafka import Producer


def properties(path):
    config = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", "!")):
                key, value = line.split("=", 1)
                config[key.strip()] = value.strip()
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--properties", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--file", required=True)
    args = parser.parse_args()
    failures = []

    def delivered(error, _message):
        if error is not None:
            failures.append(str(error))

    producer = Producer(dict(properties(args.properties), **{"message.timeout.ms": 30000}))
    sent = 0
    with open(args.file) as f:
        for line in f:
            if line.strip():
                producer.produce(args.topic, line.strip().encode(), on_delivery=delivered)
                producer.poll(0)
                sent += 1
    left = producer.flush(60)
    if left or failures:
        print(f"{left} undelivered, {len(failures)} failed: {failures[:3]}", file=sys.stderr)
        sys.exit(1)
    print(f"delivered {sent}")


if __name__ == "__main__":
    main()
