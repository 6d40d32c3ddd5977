"""The fixed prompts every target gets, in the same order.

Chat prompts ask for long, open-ended answers so that a 135M model keeps going for the whole token
budget without an end-of-sequence token (edged has no ignore_eos; llama-server gets `ignore_eos` as a
belt-and-braces measure). The actual token counts are recorded and the rates computed from them.

The prefix-cache scenario needs ~300-token system prompts: one reused across requests, and fresh
ones that share no prefix worth caching (each opens with its own session line and shuffles its sentences).
"""

from __future__ import annotations

import random

Messages = list[dict[str, str]]

SYSTEM = "You are a helpful assistant. Answer in detail."

CHAT_PROMPTS: dict[str, str] = {
    "essay-rivers": "Write a long, detailed essay about the history of rivers and how they shaped human cities.",
    "guide-garden": "Explain step by step, in great detail, how to start a vegetable garden from scratch.",
    "story-lighthouse": "Write a long story about a lighthouse keeper who finds a mysterious map.",
    "explain-computers": "Describe in detail how a computer works, from the keyboard to the processor.",
}

# The warm-up request's prompt: long-answer like the others, but not one of them, so the first measured
# request does not find its whole prompt already in the target's cache.
WARMUP_PROMPT = "Write a long poem about the sea and the ships that sail on it."

QUESTIONS = (
    "What should I check first when the greenhouse fan stops?",
    "How often should the water tank be cleaned?",
    "Which sensor readings are normal at night?",
    "What does a blinking red status light mean?",
    "How do I record a harvest in the log?",
    "When should the shade screens be closed?",
    "What is the safe temperature range for seedlings?",
    "How do I restart the irrigation controller?",
    "Who should I call if the power fails?",
    "How much fertiliser goes into the nutrient mix?",
)

# Sentences of the long system prompt: a plausible device manual, about 300 tokens in all.
_MANUAL = (
    "You are the on-site assistant of a community greenhouse run by volunteers.",
    "The greenhouse has four growing beds, a nutrient tank, two ventilation fans and a weather station.",
    "Answer questions from volunteers clearly and briefly, and never invent readings you were not given.",
    "The irrigation controller waters the beds at six in the morning and at six in the evening.",
    "Each watering cycle lasts twelve minutes unless the soil moisture sensors report wet soil.",
    "The nutrient tank holds two hundred litres and must be cleaned every second week.",
    "Fans switch on automatically above twenty-eight degrees and off again below twenty-four degrees.",
    "The shade screens close when the light sensor reports strong sun for more than ten minutes.",
    "Seedlings are kept on the north bench, where the temperature should stay between eighteen and twenty-five.",
    "A blinking red light on the control box means a sensor has stopped reporting and needs attention.",
    "A steady red light means the controller has stopped watering and must be restarted by hand.",
    "To restart the controller, hold the grey button for five seconds and wait for the green light.",
    "Volunteers record every harvest in the logbook with the date, the bed number and the weight.",
    "Tools are returned to the shed after use and the shed is locked at the end of each day.",
    "If the power fails, call the duty coordinator, whose number is posted next to the door.",
    "Never mix fertiliser stronger than the chart on the tank says, because strong mixes burn the roots.",
    "Remind volunteers to wash their hands after handling compost or fertiliser.",
    "When you are unsure, say so and suggest asking the duty coordinator.",
)


def chat_messages(prompt_id: str) -> Messages:
    question = WARMUP_PROMPT if prompt_id == "warm-up" else CHAT_PROMPTS[prompt_id]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def long_system_prompt(session: int | None = None) -> str:
    """The ~300-token manual. `session=None`: the one reused prompt; a number: a fresh, unshared variant."""
    if session is None:
        return " ".join(_MANUAL)
    sentences = list(_MANUAL)
    random.Random(session).shuffle(sentences)
    # A distinct opening keeps even the first tokens after the chat template's role header from matching.
    return f"Session {session:04d} ({_OPENINGS[session % len(_OPENINGS)]}). " + " ".join(sentences)


_OPENINGS = ("morning shift", "evening shift", "weekend crew", "school visit", "inspection day",
             "harvest week", "night watch", "training day")


def prefix_messages(system: str, question_index: int) -> Messages:
    return [{"role": "system", "content": system},
            {"role": "user", "content": QUESTIONS[question_index % len(QUESTIONS)]}]
