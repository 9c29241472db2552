"""Many more domains for the synthetic corpus: generated "skills", as a large assistant has thousands.

``data.synthetic.n_domains`` above the eight hand-written domains adds generated
skills, deterministically for a seed. A skill has its own invocation name
("quiz master"), two to five intents of its theme (``quizmaster0042_start``), slot
types of its own and shared ones, and carrier phrases: with its invocation ("ask
quiz master to start a quiz about dune") or without it ("start a quiz about
dune"), so that skills of one theme compete for the same words. Slot values come
from the corpus' shared catalogs, so vocabulary and titles overlap across domains.
Traffic is unequal: skill weights are log-normal (sigma 0.25) and one skill in five has half
the traffic.

Every skill is a domain spec in the format of ``synthetic.DOMAIN_SPECS``.
"""
from __future__ import annotations

import math
from random import Random

# theme: (verbs, slot choices (slot type, catalog)); a verb with "{0}" takes the slot
THEMES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "quiz": (("start a quiz about {0}", "ask me about {0}", "give me a question about {0}", "play trivia about {0}",
              "what is my score"), (("topic", "topic"), ("category", "movie_genres"))),
    "chef": (("find a recipe for {0}", "how do i cook {0}", "what can i make with {0}", "show me {0} recipes",
              "add {0} to my meal plan"), (("ingredient", "item_name"), ("cuisine", "language"))),
    "fitness": (("start a {0} workout", "log {0} of running", "how many steps did i walk {0}", "track my workout for {0}",
                 "set a fitness goal for {0}"), (("duration", "short_durations"), ("date", "date"))),
    "travel": (("book a flight to {0}", "find hotels in {0}", "how long is the flight to {0}", "what to do in {0}",
                "check my trip to {0}"), (("destination", "place_name"), ("country", "countries"))),
    "news": (("what is new about {0}", "latest headlines about {0}", "read the news about {0}",
              "give me a briefing on {0}", "any updates on {0}"), (("news_topic", "topic"), ("person", "person_name"))),
    "radio": (("play {0} radio", "tune in to {0}", "play the {0} station", "listen to {0} on the radio",
               "what is playing on {0}"), (("station", "genre"), ("artist", "artist_name"))),
    "games": (("play {0}", "start a game of {0}", "continue my {0} game", "what is the high score in {0}",
               "open the game {0}"), (("game", "titles"), ("level", "level"))),
    "shopping": (("order {0}", "where is my {0} order", "find deals on {0}", "compare prices for {0}",
                  "reorder {0}"), (("product", "item_name"), ("quantity", "quantity"))),
    "translate": (("translate {0}", "how do you say {0}", "say {0} in spanish", "what does {0} mean",
                   "spell {0}"), (("phrase", "word"), ("target_language", "language"))),
    "stories": (("tell me a story about {0}", "read a bedtime story about {0}", "continue the story of {0}",
                 "make up a story about {0}", "tell a short story about {0}"), (("character", "person_name"), ("story", "book_name"))),
    "calendar": (("what is on my calendar {0}", "schedule a meeting {0}", "am i free {0}", "move my meeting to {0}",
                  "cancel my meetings {0}"), (("date", "date"), ("day", "weekdays"))),
    "home": (("turn on the {0}", "is the {0} on", "schedule the {0}", "set the {0} to eco mode",
              "check the {0}"), (("appliance", "device_name"), ("room", "room"))),
    "movies": (("find showtimes for {0}", "buy tickets for {0}", "is {0} playing tonight", "rate {0}",
                "add {0} to my watchlist"), (("movie", "movie_name"), ("actor", "actor_name"))),
    "music": (("play {0}", "add {0} to my library", "who sings {0}", "find the lyrics of {0}",
               "play songs like {0}"), (("song", "song_name"), ("album", "album_name"))),
}
_ADJECTIVES = ("daily", "happy", "smart", "quick", "big", "little", "super", "magic", "golden", "blue", "bright",
               "easy", "my", "good", "real", "wild", "true", "fresh", "mighty", "lucky")
_NOUNS = ("master", "helper", "buddy", "genie", "pal", "guide", "coach", "expert", "wizard", "friend", "hub",
          "box", "house", "club", "world", "zone", "spot", "lab", "desk", "corner")
_LAUNCH = ("open {inv}", "launch {inv}", "start {inv}", "talk to {inv}")
_CARRIERS = ("ask {inv} to {act}", "tell {inv} to {act}", "{act} with {inv}", "{act} on {inv}")


def skill_specs(n: int, seed: int = 0) -> dict[str, dict]:
    """``n`` generated skills, ``{name: spec}`` in the format of ``DOMAIN_SPECS``; the same for the same seed."""
    rng = Random(f"rerank.synthetic.skills:{seed}")
    themes = sorted(THEMES)
    specs: dict[str, dict] = {}
    for k in range(n):
        theme = themes[k % len(themes)] if k < len(themes) else rng.choice(themes)
        verbs, slot_choices = THEMES[theme]
        inv = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {theme}" if rng.random() < 0.3 \
            else f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
        name = f"{theme.capitalize()}{k:04d}"
        prefix = name.lower()
        own_type = f"{prefix}_item" if rng.random() < 0.3 else None
        chosen = rng.sample(range(len(verbs)), rng.randint(2, min(5, len(verbs))))
        intents: dict[str, tuple[float, tuple[str, ...]]] = {}
        for v in chosen:
            verb = verbs[v]
            slot_type, catalog = slot_choices[rng.randrange(len(slot_choices))]
            if own_type and rng.random() < 0.5:
                slot_type = own_type
            act = verb.format(f"{{{slot_type}|{catalog}}}") if "{0}" in verb else verb
            intent = f"{prefix}_{verb.split()[0]}_{v}"
            templates = [act] + [c.format(inv=inv, act=act) for c in _CARRIERS]
            intents[intent] = (rng.uniform(0.5, 2.0), tuple(templates))
        intents[f"{prefix}_launch"] = (0.3, tuple(t.format(inv=inv) for t in _LAUNCH))
        weight = 0.125 * math.exp(rng.gauss(0.0, 0.25)) * (0.5 if rng.random() < 0.2 else 1.0)
        devices = [rng.uniform(0.2, 1.0), rng.uniform(0.1, 0.8), rng.uniform(0.0, 0.4)]
        total = sum(devices)
        specs[name] = {"weight": weight, "devices": tuple(d / total for d in devices), "ambiguous": None, "intents": intents}
    return specs
