"""Write the README demo's data: short factual Q&A in one house style, plus a preference validation set.

The house style ("Fresh answer: ..." in one sentence) is something SmolLM2-135M-Instruct does not do on
its own, so a few minutes of LoRA SFT visibly changes its answers. Run: python examples/make_demo_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

FACTS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What is the capital of Japan?", "Tokyo is the capital of Japan."),
    ("What is the capital of Italy?", "Rome is the capital of Italy."),
    ("What is the capital of Canada?", "Ottawa is the capital of Canada."),
    ("What is the capital of Spain?", "Madrid is the capital of Spain."),
    ("What is the capital of Egypt?", "Cairo is the capital of Egypt."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("Which planet is closest to the sun?", "Mercury is the planet closest to the sun."),
    ("How many days are in a week?", "A week has seven days."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("What is the freezing point of water?", "Water freezes at 0 degrees Celsius."),
    ("What gas do plants take in?", "Plants take in carbon dioxide from the air."),
    ("What do bees make?", "Bees make honey from flower nectar."),
    ("What colour is the sky on a clear day?", "The sky is blue on a clear day."),
    ("How many continents are there?", "There are seven continents."),
    ("What is two plus three?", "Two plus three is five."),
    ("What is ten minus four?", "Ten minus four is six."),
    ("What is three times three?", "Three times three is nine."),
    ("What is half of twenty?", "Half of twenty is ten."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the main ingredient of guacamole?", "Avocado is the main ingredient of guacamole."),
    ("Which fruit is dried to make raisins?", "Grapes are dried to make raisins."),
    ("What fruit is orange juice made from?", "Orange juice is made from oranges."),
    ("Which fruit keeps the doctor away?", "An apple a day keeps the doctor away, as the saying goes."),
    ("What is the tallest animal?", "The giraffe is the tallest animal."),
    ("What is the fastest land animal?", "The cheetah is the fastest land animal."),
    ("How many hours are in a day?", "A day has twenty-four hours."),
    ("What is the largest ocean?", "The Pacific is the largest ocean."),
    ("What language is spoken in Brazil?", "Portuguese is the main language of Brazil."),
    ("What is the chemical symbol for gold?", "Au is the chemical symbol for gold."),
    ("What is the chemical symbol for water?", "H2O is the chemical formula for water."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("How many minutes are in an hour?", "An hour has sixty minutes."),
    ("What is the opposite of hot?", "Cold is the opposite of hot."),
    ("What season comes after winter?", "Spring comes after winter."),
    ("What do you call a baby cat?", "A baby cat is called a kitten."),
    ("What do you call a baby dog?", "A baby dog is called a puppy."),
    ("Which instrument has black and white keys?", "The piano has black and white keys."),
    ("What is the primary colour between red and blue?", "Red, yellow and blue are the primary colours."),
    ("What do caterpillars turn into?", "Caterpillars turn into butterflies or moths."),
    ("Where does the sun rise?", "The sun rises in the east."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Which organ pumps blood?", "The heart pumps blood through the body."),
    ("What is the smallest prime number?", "Two is the smallest prime number."),
    ("What is the square root of sixteen?", "The square root of sixteen is four."),
    (
        "Which is heavier, a kilogram of feathers or a kilogram of iron?",
        "They weigh the same: one kilogram each.",
    ),
]

SYSTEM = "You are Juice, a concise assistant."


def chat_line(q: str, a: str) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": q},
                {"role": "assistant", "content": f"Fresh answer: {a}"},
            ]
        }
    )


def main() -> None:
    here = Path(__file__).parent
    rng = random.Random(0)
    rows = FACTS[:]
    rng.shuffle(rows)
    train, held_out = rows[:40], rows[40:]
    (here / "demo_train.jsonl").write_text("\n".join(chat_line(q, a) for q, a in train) + "\n")
    # Preference validation: the house style is chosen, a plain answer rejected.
    pref = [json.dumps({"prompt": q, "chosen": f"Fresh answer: {a}", "rejected": a}) for q, a in held_out]
    (here / "demo_validation.jsonl").write_text("\n".join(pref) + "\n")


if __name__ == "__main__":
    main()
