"""Which log base makes the paper's entropy threshold (0.3) meaningful?

    pip install wordfreq          # bench only: English word frequencies from a large web/books/subtitles mix
    python bench/bench_filters_entropy.py

theta(x) = -sum_i p(x_i) log_b p(x_i) over the sentence's word tokens, p = corpus-wide word probability.
The pipeline computes p from its own sentence table (Spark); here p comes from wordfreq, a stand-in for
the word distribution of a web-scale corpus such as OBELICS (a 2-core machine has no 2.13B sentences).
Three sets are scored: short prose (the 88 hand-labelled segmentation paragraphs, split into
sentences), web-paragraph prose of typical length, and web junk an entropy filter is meant to catch
(navigation, name/keyword lists, codes). The table
shows the share of each set below 0.3 for base 2, e and 10, plus the normalised variants (divided by
the number of words) for comparison.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.segmentation_gold import GOLD, HELDOUT

# Typical web-paragraph sentences (blog, news, travel, recipe, product prose), 10-30 words: OBELICS-like.
WEB = [
    "We spent the first morning walking along the harbour, where fishermen were unloading the night's catch.",
    "The recipe is simple, but the dough needs to rest in the fridge for at least two hours.",
    "After the storm, volunteers from the village helped to clear the fallen trees from the main road.",
    "The museum's new wing displays more than three hundred paintings from the nineteenth century.",
    "If you are travelling with children, the park has a small playground near the entrance.",
    "Our guide explained that the glacier has lost almost a third of its volume since 1980.",
    "The city council approved the plan to build a new bridge across the river last week.",
    "She started the company in her garage with a laptop and a few hundred dollars of savings.",
    "The hotel is a short walk from the station, and breakfast is served on the terrace in summer.",
    "Researchers found that the birds return to the same nesting site year after year.",
    "Add the onions to the pan and cook them slowly until they are soft and golden.",
    "The trail climbs steeply through the forest before it opens onto a wide alpine meadow.",
    "Many of the old houses in the town were built by merchants who traded wool with Flanders.",
    "The match was delayed by an hour because of heavy rain, but the crowd stayed in their seats.",
    "This camera is light enough to carry all day, and the battery lasts for about five hundred shots.",
    "In the spring the valley is covered with wild flowers, and farmers drive their cattle up the slopes.",
    "The festival attracts thousands of visitors every year, and tickets usually sell out within days.",
    "He told reporters that the negotiations would continue until both sides reached an agreement.",
    "The children built a sandcastle on the beach while their parents read in the shade of an umbrella.",
    "Our apartment had a small balcony with a view of the cathedral and the old market square.",
    "The new version of the app lets users share photos directly with their friends and family.",
    "A local baker sells fresh bread and pastries from a little shop next to the church.",
    "The road to the summit is closed in winter, so most visitors take the cable car instead.",
    "Scientists have long debated how the ancient builders moved such large stones across the plain.",
    "The band played their first concert in a tiny pub in the north of the city.",
    "Make sure to book a table in advance, because the restaurant is very popular on weekends.",
    "The farmers' market on Saturday mornings is the best place to buy local cheese and honey.",
    "During the war the castle was used as a hospital for wounded soldiers.",
    "The team trained hard all season and finally won the championship in the last game.",
    "The path follows the river for several miles before it reaches a quiet village with a stone bridge.",
]

JUNK = [
    "Home About Contact Privacy Policy", "Login Register Cart Checkout", "Tags travel Norway glacier hiking",
    "Photo credit John Smith Reuters", "SKU 88213 XL Black Cotton", "Related posts Recipes Desserts Baking",
    "Share Facebook Twitter Pinterest Email", "Copyright 2024 Example Media Group", "Galdhøpiggen Glittertind Snøhetta",
    "Oslo Bergen Trondheim Stavanger Tromsø", "Canon EOS 5D Mark IV 24-70mm", "Previous Next Page 1 2 3 4",
    "Categories Uncategorized Lifestyle Fashion", "Posted by admin Comments Off", "iPhone iPad MacBook AirPods",
    "Read more Subscribe Newsletter", "Download PDF Print Version", "Monday Tuesday Wednesday Thursday Friday",
    "Keywords wedding bride groom flowers", "Sponsored Advertisement Partner content",
]
WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def main() -> None:
    try:
        from wordfreq import word_frequency
    except ImportError:
        sys.exit("pip install wordfreq (bench only)")
    short = [s for paragraph in GOLD + HELDOUT for s in paragraph]
    floor = 1e-9

    def theta(sentence: str, base: float, normalise: bool) -> float:
        words = WORD.findall(sentence.lower())
        total = 0.0
        for w in words:
            p = max(word_frequency(w, "en"), floor)
            total += -p * math.log(p) / math.log(base)
        return total / max(len(words), 1) if normalise else total

    print(f"{len(short)} short prose sentences (segmentation set, mean "
          f"{sum(len(WORD.findall(x)) for x in short) / len(short):.1f} words), {len(WEB)} web-paragraph sentences "
          f"(mean {sum(len(WORD.findall(x)) for x in WEB) / len(WEB):.1f} words), {len(JUNK)} junk strings")
    print("share with theta < 0.3 (dropped):")
    print(f"{'variant':<20} {'short prose':>12} {'web prose':>10} {'junk':>6}  web theta p10/p50/p90")
    for normalise in (False, True):
        for name, base in (("2", 2.0), ("e", math.e), ("10", 10.0)):
            label = f"log{name}" + (" / n_words" if normalise else " (sum)")
            rates = []
            for group in (short, WEB, JUNK):
                rates.append(sum(theta(x, base, normalise) < 0.3 for x in group) / len(group))
            values = sorted(theta(x, base, normalise) for x in WEB)
            q = lambda f: values[int(f * (len(values) - 1))]  # noqa: E731
            print(f"{label:<20} {rates[0]:>12.1%} {rates[1]:>10.1%} {rates[2]:>6.1%}  "
                  f"{q(0.1):.3f}/{q(0.5):.3f}/{q(0.9):.3f}")
    print("\nexamples (log2 sum):")
    for s in ["A dog sitting next to a door.", "It's a vehicular collision.", "Photo credit John Smith Reuters",
              "The team won the final match on Sunday."]:
        print(f"  {theta(s, 2.0, False):.3f}  {s}")


if __name__ == "__main__":
    main()
