"""The embedded default corpus: a synthetic voice-assistant traffic sample.

It exists to reproduce the problem the re-rankers solve, not to be pretty:

- the same short request ("play mary poppins") is genuinely ambiguous across
  Music, Books and Video, because a shared catalog of titles exists in all three
  and a fair share of their traffic uses the same short templates;
- the device (``echo``, ``echo_show``, ``fire_tv``) is drawn per domain and never
  shows in the text, so only a model that reads the context can resolve the
  ambiguity (on a Fire TV "play mary poppins" is mostly Video);
- wording overlaps elsewhere too ("turn on ..." SmartHome vs Video subtitles,
  "what is ..." Knowledge vs Weather, "pause" / "stop" in every media domain);
- domain frequencies are unequal, so per-domain classifiers see different
  priors and their scores are not on one scale;
- a few per cent of requests lose or garble a filler word, so that no
  recognizer is perfect even on unambiguous traffic.

Records are MASSIVE-format dicts (``id, locale, partition, scenario, intent,
utt, annot_utt, device``); ``annot_utt`` carries the slots in bracket form,
``play [song_name : mary poppins] by [artist_name : julie andrews]``.

Generation is deterministic for a seed, streams (``iter_records``), and the
content of the first ``n`` records does not depend on ``n`` or on the
partition fractions: partitions come from a separate random stream.
"""
from __future__ import annotations

import json
import math
import operator
import os
import re
import tempfile
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from random import Random

__all__ = [
    "AMBIGUOUS_TITLES",
    "DEVICES",
    "DOMAINS",
    "INTENTS",
    "SLOT_TYPES",
    "generate",
    "iter_records",
    "write_jsonl",
]

DOMAINS: tuple[str, ...] = (
    "Music", "Books", "Video", "Weather", "Shopping", "SmartHome", "Notifications", "Knowledge",
)
DEVICES: tuple[str, ...] = ("echo", "echo_show", "fire_tv")
LOCALE = "en-US"

# ---------------------------------------------------------------------------
# Catalogs. Keys are catalog names used in templates as ``{slot_type|catalog}``;
# a bare ``{slot_type}`` reads the catalog of the same name. Values are
# lower-case words without digits or punctuation (numbers spelled out, as a
# recognizer would transcribe them), so the text needs no normalisation.
# ---------------------------------------------------------------------------

# Titles that exist as a soundtrack/song, a book and a film: the heart of the
# cross-domain ambiguity.
AMBIGUOUS_TITLES: tuple[str, ...] = (
    "mary poppins", "the hunger games", "frozen", "harry potter", "dune",
    "the lion king", "little women", "jurassic park", "the wizard of oz",
    "the great gatsby", "pride and prejudice", "the notebook", "twilight",
    "the godfather", "matilda", "the color purple", "les miserables", "wicked",
    "the secret garden", "charlie and the chocolate factory",
    "the lord of the rings", "the hobbit", "life of pi", "gone with the wind",
    "the shining", "coraline", "the martian", "forrest gump",
)

_SONGS = (
    "bohemian rhapsody", "hotel california", "shape of you", "blinding lights",
    "bad guy", "rolling in the deep", "shake it off", "uptown funk",
    "smells like teen spirit", "hey jude", "let it be", "billie jean",
    "sweet child o mine", "wonderwall", "yellow", "someone like you",
    "thinking out loud", "stairway to heaven", "purple rain", "imagine",
    "dancing queen", "take on me", "mr brightside", "levitating",
    "drivers license", "old town road", "happy", "halo", "umbrella",
    "viva la vida", "seven nation army", "africa", "despacito", "bad romance",
    "crazy in love", "all of me", "perfect", "anti hero", "flowers",
    "as it was", "watermelon sugar", "cruel summer", "dont stop me now",
)
_ARTISTS = (
    "taylor swift", "ed sheeran", "the beatles", "adele", "queen", "beyonce",
    "drake", "billie eilish", "the weeknd", "michael jackson", "bruno mars",
    "coldplay", "dua lipa", "harry styles", "lady gaga", "rihanna",
    "kendrick lamar", "ariana grande", "elton john", "fleetwood mac",
    "the rolling stones", "led zeppelin", "nirvana", "prince", "madonna",
    "abba", "post malone", "olivia rodrigo", "bad bunny", "miley cyrus",
    "julie andrews", "idina menzel", "frank sinatra", "johnny cash",
    "dolly parton", "bob marley", "the killers", "arctic monkeys",
    "imagine dragons", "kacey musgraves",
)
_ALBUMS = (
    "abbey road", "thriller", "rumours", "nevermind", "back in black",
    "the dark side of the moon", "folklore", "midnights", "divide", "lemonade",
    "future nostalgia", "after hours", "sour", "random access memories",
    "a night at the opera", "born in the usa", "the joshua tree",
    "back to black", "golden hour", "renaissance", "harrys house",
    "good kid maad city", "currents", "blue", "graceland", "led zeppelin four",
    "the college dropout", "red", "reputation", "continuum",
)
_PLAYLISTS = (
    "workout", "chill vibes", "road trip", "discover weekly", "focus", "party",
    "sleep", "dinner party", "morning coffee", "throwback", "summer hits",
    "rainy day", "study", "top hits", "feel good", "running", "christmas",
    "release radar", "deep focus", "sunday morning", "cooking", "beast mode",
)
_MUSIC_GENRES = (
    "jazz", "classical", "rock", "hip hop", "country", "pop", "blues",
    "reggae", "heavy metal", "lo fi", "classic rock", "indie", "r and b",
    "dance", "folk", "soul", "k pop", "punk rock", "disco", "ambient",
    "smooth jazz", "gospel", "latin", "bluegrass",
)
_BOOKS = (
    "the midnight library", "where the crawdads sing", "atomic habits",
    "educated", "becoming", "the alchemist", "to kill a mockingbird",
    "nineteen eighty four", "the catcher in the rye", "sapiens",
    "the silent patient", "project hail mary",
    "the seven husbands of evelyn hugo", "a court of thorns and roses",
    "fourth wing", "lessons in chemistry", "the body keeps the score",
    "thinking fast and slow", "the road", "circe", "normal people",
    "the kite runner", "the book thief", "a man called ove",
    "the girl on the train", "gone girl", "the da vinci code",
    "brave new world", "of mice and men", "the handmaids tale",
    "born a crime", "the power of now", "verity", "it ends with us",
)
_AUTHORS = (
    "stephen king", "j k rowling", "jane austen", "suzanne collins",
    "frank herbert", "agatha christie", "michelle obama", "james clear",
    "colleen hoover", "brandon sanderson", "george orwell", "toni morrison",
    "harper lee", "malcolm gladwell", "yuval noah harari", "neil gaiman",
    "margaret atwood", "dan brown", "john grisham", "ernest hemingway",
    "mark twain", "roald dahl", "j r r tolkien", "louisa may alcott",
    "p l travers", "andy weir", "delia owens", "matt haig",
    "taylor jenkins reid", "rebecca yarros", "sarah j maas", "kazuo ishiguro",
    "david sedaris", "barack obama",
)
_CHAPTERS = (
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "fifteen", "twenty",
)
_MOVIES = (
    "the avengers", "titanic", "inception", "the dark knight",
    "top gun maverick", "avatar", "star wars", "the matrix", "finding nemo",
    "toy story", "back to the future", "pulp fiction",
    "the shawshank redemption", "interstellar", "barbie", "oppenheimer",
    "the incredibles", "shrek", "moana", "encanto", "spider man no way home",
    "black panther", "the princess bride", "home alone", "elf", "gladiator",
    "the social network", "la la land", "get out", "knives out",
    "everything everywhere all at once", "the terminator", "ghostbusters",
    "mean girls", "coco", "inside out",
)
_SHOWS = (
    "stranger things", "the office", "friends", "breaking bad", "the crown",
    "the boys", "the mandalorian", "game of thrones", "the rings of power",
    "ted lasso", "squid game", "the last of us", "bluey", "wednesday",
    "succession", "reacher", "fallout", "the bear", "seinfeld",
    "greys anatomy", "the simpsons", "house of the dragon",
)
_ACTORS = (
    "tom hanks", "meryl streep", "leonardo dicaprio", "scarlett johansson",
    "denzel washington", "zendaya", "keanu reeves", "tom cruise",
    "margot robbie", "ryan gosling", "emma stone", "brad pitt",
    "julia roberts", "morgan freeman", "will smith", "jennifer lawrence",
    "chris hemsworth", "timothee chalamet", "viola davis",
    "samuel l jackson",
)
_APPS = (
    "netflix", "prime video", "hulu", "disney plus", "youtube", "max",
    "peacock", "paramount plus",
)
_MOVIE_GENRES = (
    "comedy", "horror", "action", "romantic comedy", "documentary",
    "animated", "sci fi", "thriller", "drama", "kids", "christmas",
    "superhero", "mystery", "western", "family",
)
_LANGUAGES = (
    "english", "spanish", "french", "german", "italian", "japanese", "korean",
    "portuguese", "hindi", "mandarin", "arabic",
)
_CITIES = (
    "new york", "los angeles", "chicago", "seattle", "san francisco",
    "boston", "miami", "london", "paris", "tokyo", "berlin", "rome", "madrid",
    "sydney", "toronto", "mexico city", "new delhi", "cape town",
    "rio de janeiro", "buenos aires", "dubai", "singapore", "hong kong",
    "austin", "denver", "las vegas", "washington", "atlanta", "dallas",
    "portland", "san diego", "amsterdam", "dublin", "vancouver", "nashville",
    "phoenix", "honolulu", "salt lake city", "kansas city", "new orleans",
)
_COUNTRIES = (
    "france", "japan", "australia", "brazil", "canada", "egypt", "kenya",
    "peru", "norway", "india", "germany", "italy", "mexico", "spain",
    "argentina", "south korea", "new zealand", "thailand", "greece", "turkey",
    "sweden", "portugal", "vietnam", "nigeria", "chile", "iceland", "ireland",
    "switzerland", "morocco", "the united kingdom",
)
_DATES = (
    "today", "tomorrow", "tonight", "this weekend", "next week", "this week",
    "the day after tomorrow", "next weekend", "this evening", "this morning",
    "tomorrow morning", "tomorrow night",
)
_WEEKDAYS = (
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
    "sunday",
)
_TIMES = (
    "seven am", "six thirty am", "noon", "midnight", "eight pm", "five fifteen",
    "seven thirty", "ten pm", "six am", "quarter past seven", "half past six",
    "eleven forty five pm", "four pm", "five am", "nine thirty", "eight am",
    "three pm", "ten thirty am", "six forty five", "nine pm",
)
_DURATIONS = (
    "five minutes", "ten minutes", "thirty seconds", "one hour",
    "an hour and a half", "twenty minutes", "forty five minutes", "two hours",
    "ninety seconds", "fifteen minutes", "three minutes", "half an hour",
    "twelve minutes", "one minute", "eight minutes", "twenty five minutes",
)
# Audiobook jumps are short: nobody skips ahead two hours.
_SHORT_DURATIONS = (
    "thirty seconds", "one minute", "five minutes", "ten seconds",
    "fifteen seconds", "two minutes", "ten minutes",
)
_WEATHER_VERBS = ("rain", "snow", "hail", "storm", "drizzle")
_WEATHER_NOUNS = (
    "rain", "snow", "thunderstorms", "hail", "fog", "sleet", "showers",
    "frost",
)
_WEATHER_ADJECTIVES = (
    "sunny", "windy", "cloudy", "hot", "cold", "humid", "rainy", "foggy",
    "warm", "chilly",
)
_ITEMS = (
    "paper towels", "toilet paper", "double a batteries", "dish soap",
    "laundry detergent", "coffee beans", "dog food", "cat litter",
    "olive oil", "phone charger", "printer ink", "trash bags", "almond milk",
    "peanut butter", "sparkling water", "protein bars", "shampoo",
    "toothpaste", "light bulbs", "hand soap", "paper plates", "diapers",
    "baby wipes", "vitamins", "green tea", "orange juice", "ground coffee",
    "sunscreen", "yoga mat", "usb cable", "hdmi cable", "headphones",
    "water filters", "coffee filters", "aluminum foil", "granola",
    "pasta sauce", "eggs", "milk", "bananas", "bread",
)
_QUANTITIES = (
    "one", "two", "three", "four", "five", "six", "ten", "twelve", "twenty",
    "a dozen", "a couple of",
)
_APPLIANCES = (
    "lights", "lamp", "fan", "ceiling fan", "air conditioner", "heater",
    "coffee maker", "tv", "porch light", "dishwasher", "washing machine",
    "robot vacuum", "air purifier", "humidifier", "space heater",
    "fireplace", "smart plug", "desk lamp", "floor lamp", "string lights",
    "sprinklers", "night light", "christmas tree", "kettle",
)
# Only what can be dimmed, so "dim the dishwasher" never happens.
_DIMMABLES = (
    "lights", "lamp", "porch light", "desk lamp", "floor lamp",
    "string lights", "night light", "ceiling light",
)
_ROOMS = (
    "kitchen", "living room", "bedroom", "master bedroom", "bathroom",
    "office", "garage", "basement", "dining room", "kids room", "hallway",
    "guest room", "nursery", "laundry room", "patio", "backyard",
    "front porch", "attic", "den", "upstairs", "downstairs",
)
_LEVELS = (
    "twenty", "fifty", "seventy", "seventy two", "sixty eight", "thirty",
    "ten", "eighty", "one hundred", "sixty five", "five", "seven", "three",
    "forty", "seventy five", "sixty",
)
# Reminder texts deliberately borrow other domains' words (milk, umbrella,
# library books, coffee) so that keywords alone do not decide the domain.
_EVENTS = (
    "call mom", "take out the trash", "buy milk", "pick up the kids",
    "water the plants", "pay the rent", "take my medicine", "feed the dog",
    "walk the dog", "check the oven", "call the dentist", "book a flight",
    "send the report", "pick up the dry cleaning", "charge my phone",
    "renew my passport", "go to the gym", "start dinner", "move the car",
    "submit my timesheet", "call grandma", "bring an umbrella",
    "return the library books", "order more coffee", "watch the game",
)
_TOPICS = (
    "photosynthesis", "black holes", "the speed of light", "quantum computing",
    "climate change", "the french revolution", "the roman empire", "dna",
    "gravity", "inflation", "the stock market", "artificial intelligence",
    "the big bang", "the moon landing", "the pythagorean theorem",
    "the water cycle", "volcanoes", "the immune system", "cryptocurrency",
    "the theory of relativity", "the great wall of china", "the pyramids",
    "the olympics", "plate tectonics", "the cold war",
)
_WORDS = (
    "serendipity", "ubiquitous", "ephemeral", "melancholy", "gregarious",
    "quixotic", "paradigm", "esoteric", "ambiguous", "nostalgia",
    "resilience", "euphoria", "cacophony", "pragmatic", "benevolent",
    "verbose", "onomatopoeia", "schadenfreude", "hubris", "zeitgeist",
    "petrichor", "sonder",
)
# People overlap the artist, author and actor catalogs on purpose.
_PEOPLE = (
    "albert einstein", "abraham lincoln", "marie curie", "barack obama",
    "elon musk", "taylor swift", "stephen king", "tom hanks",
    "serena williams", "lebron james", "oprah winfrey", "martin luther king",
    "william shakespeare", "leonardo da vinci", "cleopatra", "napoleon",
    "nelson mandela", "frida kahlo", "isaac newton", "michael jordan",
    "beyonce", "jane austen", "keanu reeves", "queen elizabeth",
    "neil armstrong", "dolly parton", "j k rowling", "zendaya",
)

CATALOGS: dict[str, tuple[str, ...]] = {
    "titles": AMBIGUOUS_TITLES,
    # The shared titles also live in each domain's own catalog, so they show
    # up in explicit templates too ("play the movie frozen").
    "song_name": _SONGS + AMBIGUOUS_TITLES,
    "artist_name": _ARTISTS,
    "album_name": _ALBUMS + AMBIGUOUS_TITLES,
    "playlist_name": _PLAYLISTS,
    "genre": _MUSIC_GENRES,
    "book_name": _BOOKS + AMBIGUOUS_TITLES,
    "author_name": _AUTHORS,
    "chapter": _CHAPTERS,
    "movie_name": _MOVIES + AMBIGUOUS_TITLES,
    "show_name": _SHOWS,
    "actor_name": _ACTORS,
    "app_name": _APPS,
    "movie_genres": _MOVIE_GENRES,
    "language": _LANGUAGES,
    "place_name": _CITIES,
    "countries": _COUNTRIES,
    "date": _DATES,
    "weekdays": _WEEKDAYS,
    "time": _TIMES,
    "duration": _DURATIONS,
    "short_durations": _SHORT_DURATIONS,
    "weather_verbs": _WEATHER_VERBS,
    "weather_nouns": _WEATHER_NOUNS,
    "weather_adjectives": _WEATHER_ADJECTIVES,
    "item_name": _ITEMS,
    "quantity": _QUANTITIES,
    "device_name": _APPLIANCES,
    "dimmables": _DIMMABLES,
    "room": _ROOMS,
    "level": _LEVELS,
    "event_name": _EVENTS,
    "topic": _TOPICS,
    "word": _WORDS,
    "person_name": _PEOPLE,
}

# ---------------------------------------------------------------------------
# Domains. ``weight``: share of traffic. ``devices``: P(device | domain), in
# DEVICES order. ``ambiguous``: (share of the domain's traffic that uses the
# shared short templates, intent, slot type the title gets there).
# ``intents``: intent -> (weight within the rest of the traffic, templates);
# templates are drawn uniformly within an intent.
# ---------------------------------------------------------------------------

# Shared verbatim by Music, Books and Video: the text alone cannot tell them apart.
_AMBIGUOUS_TEMPLATES: tuple[str, ...] = (
    "play {title}", "put on {title}", "can you play {title}",
    "play {title} please", "start {title}", "i want {title}",
)

_PAUSE_WORDS = ("pause", "stop")

DOMAIN_SPECS: dict[str, dict] = {
    "Music": {
        "weight": 0.22,
        "devices": (0.70, 0.22, 0.08),
        "ambiguous": (0.25, "music_play", "song_name"),
        "intents": {
            "music_play": (0.60, (
                "play {song_name} by {artist_name}",
                "play the song {song_name}",
                "play the song {song_name} by {artist_name}",
                "play {artist_name}",
                "play music by {artist_name}",
                "i want to hear {song_name}",
                "i want to hear {song_name} by {artist_name}",
                "play the album {album_name}",
                "play the {album_name|titles} soundtrack",
                "play {album_name} by {artist_name}",
                "play my {playlist_name} playlist",
                "put on some {genre} music",
                "play some {genre}",
                "shuffle songs by {artist_name}",
                "play {genre} music in the {room}",
            )),
            "music_pause": (0.15, _PAUSE_WORDS + (
                "pause the music", "stop the music", "pause this song",
                "stop playing", "stop the song",
            )),
            "music_next": (0.12, (
                "next song", "skip this song", "skip", "next",
                "play the next track", "skip to the next song",
                "go to the next song",
            )),
            "music_volume": (0.13, (
                "turn it up", "turn the volume up", "turn the music down",
                "louder", "set the volume to {level}", "volume {level}",
                "turn it down", "make it quieter",
            )),
        },
    },
    "Books": {
        "weight": 0.07,
        "devices": (0.50, 0.42, 0.08),
        "ambiguous": (0.30, "books_play_audiobook", "book_name"),
        "intents": {
            "books_play_audiobook": (0.60, (
                "play the audiobook {book_name}",
                "read {book_name}",
                "read {book_name} by {author_name}",
                "play {book_name} on audible",
                "listen to the audiobook {book_name}",
                "play the book {book_name}",
                "read me a book by {author_name}",
                "play {book_name} by {author_name} on audible",
                "start reading {book_name}",
                "read chapter {chapter} of {book_name}",
                "play my audiobook {book_name}",
                "i want to listen to {book_name} by {author_name}",
                "read the latest book by {author_name}",
                "play an audiobook by {author_name}",
            )),
            "books_resume": (0.20, (
                "resume my audiobook", "continue reading {book_name}",
                "pick up where i left off", "continue my book",
                "resume {book_name}", "resume reading", "keep reading",
            )),
            "books_navigate": (0.12, (
                "skip ahead {duration|short_durations}",
                "go back {duration|short_durations}",
                "rewind {duration|short_durations}",
                "next chapter", "previous chapter",
                "go to chapter {chapter}", "skip to chapter {chapter}",
            )),
            "books_pause": (0.08, _PAUSE_WORDS + (
                "pause the book", "stop reading", "pause the audiobook",
            )),
        },
    },
    "Video": {
        "weight": 0.13,
        "devices": (0.07, 0.18, 0.75),
        "ambiguous": (0.28, "video_play", "movie_name"),
        "intents": {
            "video_play": (0.55, (
                "play the movie {movie_name}",
                "watch {movie_name}",
                "i want to watch {movie_name}",
                "play {movie_name} on {app_name}",
                "show me {movie_name}",
                "play the trailer for {movie_name}",
                "watch {movie_name} on {app_name}",
                "play the film {movie_name}",
                "play the next episode of {show_name}",
                "watch {show_name}",
                "play {show_name} on {app_name}",
                "put on the show {show_name}",
                "resume {show_name}",
                "continue watching {show_name}",
            )),
            "video_search": (0.15, (
                "find {genre|movie_genres} movies",
                "show me movies with {actor_name}",
                "search for {movie_name}",
                "search for {show_name} on {app_name}",
                "find movies with {actor_name}",
                "show me {genre|movie_genres} movies on {app_name}",
                "what {genre|movie_genres} movies are on {app_name}",
                "look for films starring {actor_name}",
            )),
            "video_subtitles": (0.12, (
                "turn on subtitles", "turn on captions", "turn off subtitles",
                "turn off the captions", "turn on {language} subtitles",
                "switch the subtitles to {language}",
                "change the audio to {language}", "show subtitles",
                "turn on closed captions",
            )),
            "video_pause": (0.18, _PAUSE_WORDS + (
                "pause the movie", "pause the show", "stop the movie",
                "pause this",
            )),
        },
    },
    "Weather": {
        "weight": 0.11,
        "devices": (0.55, 0.40, 0.05),
        "ambiguous": None,
        "intents": {
            "weather_query": (0.55, (
                "what is the weather", "what is the weather {date}",
                "what is the weather in {place_name}",
                "what is the weather like in {place_name} {date}",
                "weather in {place_name}", "how is the weather {date}",
                "tell me the forecast for {place_name}",
                "what is the forecast {date}",
                "what is the weather going to be like on {date|weekdays}",
                "give me the weather for {place_name}", "weather",
                "what's the weather like",
                "what is the weather in {place_name} on {date|weekdays}",
            )),
            "weather_temperature": (0.25, (
                "what is the temperature in {place_name}",
                "how hot is it in {place_name}",
                "how cold will it be {date}",
                "what is the temperature outside",
                "how warm will it be in {place_name} {date}",
                "what is the high {date}",
                "what is the low in {place_name} {date}",
                "how cold is it outside",
            )),
            "weather_condition": (0.20, (
                "will it {weather_descriptor|weather_verbs} {date}",
                "is it going to {weather_descriptor|weather_verbs} in {place_name}",
                "is there a chance of {weather_descriptor|weather_nouns} {date}",
                "do i need an umbrella {date}",
                "is it going to be {weather_descriptor|weather_adjectives} {date}",
                "will it be {weather_descriptor|weather_adjectives} in {place_name} {date}",
                "do i need a jacket {date}",
            )),
        },
    },
    "Shopping": {
        "weight": 0.10,
        "devices": (0.50, 0.45, 0.05),
        "ambiguous": None,
        "intents": {
            "shopping_add_to_cart": (0.35, (
                "add {item_name} to my cart",
                "add {quantity} {item_name} to my cart",
                "put {item_name} in my cart",
                "add {item_name} to my basket",
                "put {quantity} {item_name} in my cart",
                "add {item_name} to the cart",
                "can you add {item_name} to my cart",
            )),
            "shopping_order": (0.30, (
                "order {item_name}", "buy {quantity} {item_name}",
                "reorder {item_name}", "buy {item_name}",
                "order more {item_name}", "i need to buy {item_name}",
                "order {quantity} packs of {item_name}", "buy some {item_name}",
            )),
            "shopping_add_to_list": (0.20, (
                "add {item_name} to my shopping list",
                "put {item_name} on my list",
                "add {item_name} to the grocery list",
                "put {item_name} on my shopping list",
                "i need {item_name}", "we are out of {item_name}",
            )),
            "shopping_track_order": (0.15, (
                "where is my order", "track my package",
                "when will my {item_name} arrive", "has my {item_name} shipped",
                "where is my {item_name}", "when is my package coming",
                "track my order",
            )),
        },
    },
    "SmartHome": {
        "weight": 0.12,
        "devices": (0.55, 0.40, 0.05),
        "ambiguous": None,
        "intents": {
            "smarthome_turn_on": (0.35, (
                "turn on the {device_name}",
                "turn on the {room} {device_name}",
                "switch on the {device_name} in the {room}",
                "turn the {device_name} on",
                "turn on the {device_name} in the {room}",
                "switch on the {device_name}",
                "start the {device_name}",
            )),
            "smarthome_turn_off": (0.30, (
                "turn off the {device_name}",
                "turn off the {room} {device_name}",
                "switch off the {device_name} in the {room}",
                "turn the {device_name} off",
                "turn off the {device_name} in the {room}",
                "shut off the {device_name}",
                "turn off all the {device_name|dimmables}",
            )),
            "smarthome_set": (0.20, (
                "set the thermostat to {level}",
                "set the temperature to {level} degrees",
                "dim the {device_name|dimmables} to {level} percent",
                "set the {room} {device_name|dimmables} to {level} percent",
                "turn up the heat", "turn the heat down", "make it warmer",
                "set the {room} to {level} degrees",
            )),
            "smarthome_query": (0.15, (
                "is the {device_name} on",
                "what is the temperature in the {room}",
                "is the {room} {device_name} on",
                "did i leave the {device_name} on",
                "is the {device_name} off",
                "what is the temperature inside",
            )),
        },
    },
    "Notifications": {
        "weight": 0.07,
        "devices": (0.60, 0.37, 0.03),
        "ambiguous": None,
        "intents": {
            "notifications_set_timer": (0.35, (
                "set a timer for {duration}", "timer for {duration}",
                "set a {duration} timer", "start a timer for {duration}",
                "start a {duration} timer", "set the timer for {duration}",
                "count down {duration}",
            )),
            "notifications_set_alarm": (0.25, (
                "set an alarm for {time}", "wake me up at {time}",
                "wake me up at {time} {date}",
                "set an alarm for {time} {date}", "alarm at {time}",
                "set an alarm for {time} on {date|weekdays}",
                "wake me up {date} at {time}",
            )),
            "notifications_set_reminder": (0.25, (
                "remind me to {event_name} at {time}",
                "remind me to {event_name} {date}",
                "set a reminder to {event_name}", "remind me to {event_name}",
                "remind me to {event_name} at {time} {date}",
                "create a reminder to {event_name} on {date|weekdays}",
                "remind me in {duration} to {event_name}",
            )),
            "notifications_cancel": (0.15, (
                "cancel my alarm", "cancel the timer", "stop the timer",
                "turn off my alarm", "stop", "delete my reminder",
                "cancel my {time} alarm", "cancel the alarm for {date}",
            )),
        },
    },
    "Knowledge": {
        "weight": 0.18,
        "devices": (0.55, 0.38, 0.07),
        "ambiguous": None,
        "intents": {
            "knowledge_question": (0.40, (
                "what is the capital of {place_name|countries}",
                "what is the population of {place_name}",
                "how far is {place_name} from {place_name}",
                "how many people live in {place_name}",
                "what language do they speak in {place_name|countries}",
                "what time is it in {place_name}",
                "who wrote {book_name}", "who sings {song_name}",
                "who directed {movie_name}", "when did {movie_name} come out",
                "how tall is mount everest",
                "what is the temperature of the sun",
                "how far away is the moon",
                "what is the tallest building in {place_name}",
            )),
            "knowledge_definition": (0.30, (
                "what is {topic}", "define {word}", "what does {word} mean",
                "how do you spell {word}", "tell me about {topic}",
                "what is the meaning of {word}", "explain {topic}",
                "what is the definition of {word}",
            )),
            "knowledge_person": (0.30, (
                "who is {person_name}", "how old is {person_name}",
                "when was {person_name} born", "tell me about {person_name}",
                "where was {person_name} born",
                "who is {person_name} married to",
                "how tall is {person_name}",
                "what is {person_name} famous for",
            )),
        },
    },
}

# Share of utterances with a dropped or garbled filler word.
NOISE_RATE = 0.03
# Substitutions look like ASR slips (homophones, article confusions).
_FILLER_SWAPS: dict[str, tuple[str, ...]] = {
    "the": ("a", "uh"), "a": ("the",), "my": ("the", "by"),
    "for": ("four", "to"), "to": ("two", "the"), "in": ("and", "on"),
    "on": ("in", "and"), "me": ("the",), "some": ("the", "sum"),
    "please": ("peas",), "of": ("a",), "is": ("as",), "it": ("at",),
    "can": ("could",), "you": ("ya",), "i": ("a",), "at": ("it",),
    "up": ("a",), "with": ("what",),
}
# For templates with no filler word ("pause"): a hesitation in front.
_HESITATIONS = ("um", "uh", "hmm")

# ---------------------------------------------------------------------------
# Compilation of the data above into sampling tables (done once, at import).
# ---------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(\w+)(?:\|(\w+))?\}")
_BAD_VALUE = re.compile(r"[\[\]{}:]|\s{2,}|^\s|\s$")


@dataclass(frozen=True)
class _Template:
    intent: str
    utt_fmt: str  # "play {0} by {1}"
    annot_fmt: str  # "play [song_name : {0}] by [artist_name : {1}]"
    slot_types: tuple[str, ...]
    catalogs: tuple[tuple[str, ...], ...]
    # Word tokens for the noisy path: a str is a literal word, an int the
    # index of a slot value.
    words: tuple[str | int, ...]


@dataclass(frozen=True)
class _Domain:
    name: str
    device_cum: tuple[float, ...]
    template_cum: tuple[float, ...]
    templates: tuple[_Template, ...]


def _compile_template(text: str, intent: str, rename: dict[str, str] | None = None) -> _Template:
    utt_parts: list[str] = []
    annot_parts: list[str] = []
    slot_types: list[str] = []
    catalogs: list[tuple[str, ...]] = []
    words: list[str | int] = []
    for raw in text.split():
        m = _PLACEHOLDER.fullmatch(raw)
        if m is None:
            if "{" in raw or "}" in raw or "[" in raw or "]" in raw:
                raise ValueError(f"template {text!r}: bad word {raw!r}")
            utt_parts.append(raw)
            annot_parts.append(raw)
            words.append(raw)
            continue
        slot_type, catalog = m.group(1), m.group(2) or m.group(1)
        if rename and slot_type in rename:
            slot_type = rename[slot_type]
        if catalog not in CATALOGS:
            raise ValueError(f"template {text!r}: no catalog {catalog!r}")
        k = len(slot_types)
        slot_types.append(slot_type)
        catalogs.append(CATALOGS[catalog])
        utt_parts.append(f"{{{k}}}")
        annot_parts.append(f"[{slot_type} : {{{k}}}]")
        words.append(k)
    return _Template(intent, " ".join(utt_parts), " ".join(annot_parts), tuple(slot_types), tuple(catalogs), tuple(words))


def _cumulative(weights: list[float]) -> tuple[float, ...]:
    total = sum(weights)
    cum, acc = [], 0.0
    for w in weights:
        acc += w / total
        cum.append(acc)
    # random() < 1.0, so a last bound of exactly 1.0 makes bisect never overrun.
    cum[-1] = 1.0
    return tuple(cum)


def _compile_domain(name: str, spec: dict) -> _Domain:
    entries: list[tuple[float, _Template]] = []
    rest = 1.0
    if spec["ambiguous"] is not None:
        share, intent, slot_type = spec["ambiguous"]
        rest -= share
        for text in _AMBIGUOUS_TEMPLATES:
            tpl = _compile_template(text.replace("{title}", "{title|titles}"), intent, {"title": slot_type})
            entries.append((share / len(_AMBIGUOUS_TEMPLATES), tpl))
    intent_total = sum(w for w, _ in spec["intents"].values())
    for intent, (weight, texts) in spec["intents"].items():
        if not intent.startswith(name.lower() + "_"):
            raise ValueError(f"intent {intent!r} is not qualified by its domain {name!r}")
        for text in texts:
            entries.append((rest * weight / intent_total / len(texts), _compile_template(text, intent)))
    return _Domain(
        name=name,
        device_cum=_cumulative(list(spec["devices"])),
        template_cum=_cumulative([w for w, _ in entries]),
        templates=tuple(t for _, t in entries),
    )


def _check_catalogs() -> None:
    for name, values in CATALOGS.items():
        for v in values:
            if not v or v != v.lower() or _BAD_VALUE.search(v):
                raise ValueError(f"catalog {name!r}: bad value {v!r}")


_check_catalogs()
if tuple(DOMAIN_SPECS) != DOMAINS:
    raise ValueError("DOMAIN_SPECS must list exactly DOMAINS, in order")
_COMPILED: tuple[_Domain, ...] = tuple(_compile_domain(n, DOMAIN_SPECS[n]) for n in DOMAINS)
_DOMAIN_CUM: tuple[float, ...] = _cumulative([DOMAIN_SPECS[n]["weight"] for n in DOMAINS])

INTENTS: dict[str, tuple[str, ...]] = {n: tuple(DOMAIN_SPECS[n]["intents"]) for n in DOMAINS}
SLOT_TYPES: tuple[str, ...] = tuple(sorted({t for d in _COMPILED for tpl in d.templates for t in tpl.slot_types}))

# ---------------------------------------------------------------------------
# Generation.
# ---------------------------------------------------------------------------


def _validate(n_utterances, seed, dev_fraction, test_fraction) -> tuple[int, int, float, float]:
    if isinstance(n_utterances, bool):
        raise TypeError("n_utterances must be an integer, not a bool")
    try:
        n = operator.index(n_utterances)
    except TypeError:
        raise TypeError(f"n_utterances must be an integer, not {type(n_utterances).__name__}") from None
    if n < 1:
        raise ValueError(f"n_utterances must be >= 1, got {n}")
    if isinstance(seed, bool):
        raise TypeError("seed must be an integer, not a bool")
    try:
        s = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an integer, not {type(seed).__name__}") from None
    fractions = []
    for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}") from None
        if not (0.0 <= f < 1.0):  # also rejects NaN
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        fractions.append(f)
    if fractions[0] + fractions[1] >= 1.0:
        raise ValueError(
            f"dev_fraction + test_fraction must be < 1 (train needs a share), got {fractions[0]} + {fractions[1]}"
        )
    return n, s, fractions[0], fractions[1]


def _split_sizes(n: int, dev_fraction: float, test_fraction: float) -> tuple[int, int]:
    n_dev = math.floor(n * dev_fraction + 0.5)
    n_test = math.floor(n * test_fraction + 0.5)
    # Rounding up both may leave train empty on tiny corpora; train keeps one.
    while n_dev + n_test > n - 1 and n_dev + n_test > 0:
        if n_dev >= n_test:
            n_dev -= 1
        else:
            n_test -= 1
    return n_dev, n_test


def _render_noisy(tpl: _Template, values: list[str], rng: Random) -> tuple[str, str]:
    words = list(tpl.words)
    fillers = [i for i, w in enumerate(words) if isinstance(w, str) and w in _FILLER_SWAPS]
    if fillers:
        i = fillers[int(rng.random() * len(fillers))]
        if rng.random() < 0.5 and len(words) > 1:
            del words[i]
        else:
            swaps = _FILLER_SWAPS[words[i]]
            words[i] = swaps[int(rng.random() * len(swaps))]
    else:
        words.insert(0, _HESITATIONS[int(rng.random() * len(_HESITATIONS))])
    utt, annot = [], []
    for w in words:
        if isinstance(w, int):
            utt.append(values[w])
            annot.append(f"[{tpl.slot_types[w]} : {values[w]}]")
        else:
            utt.append(w)
            annot.append(w)
    return " ".join(utt), " ".join(annot)


def iter_records(
    n_utterances: int = 20000,
    seed: int = 0,
    dev_fraction: float = 0.15,
    test_fraction: float = 0.15,
    n_domains: int = len(DOMAINS),
) -> Iterator[dict]:
    """Stream ``n_utterances`` synthetic MASSIVE records; arguments are checked at the call.

    Exactly ``round(n * dev_fraction)`` records go to ``dev`` and
    ``round(n * test_fraction)`` to ``test`` (train keeps at least one), at
    random positions. The same seed gives the same records. ``n_domains``: the
    first ``n_domains`` hand-written domains, or all eight and generated skills
    (:mod:`rerank.corpus.skills`) up to ``n_domains``.
    """
    n, s, dev_fraction, test_fraction = _validate(n_utterances, seed, dev_fraction, test_fraction)
    if isinstance(n_domains, bool) or operator.index(n_domains) < 1:
        raise ValueError(f"n_domains must be a whole number >= 1, got {n_domains!r}")
    n_dev, n_test = _split_sizes(n, dev_fraction, test_fraction)
    return _records(n, s, n_dev, n_test, *_domain_tables(operator.index(n_domains), s))


def _domain_tables(n_domains: int, seed: int) -> tuple[tuple[_Domain, ...], tuple[float, ...]]:
    """The compiled domains and their cumulative traffic shares."""
    if n_domains == len(DOMAINS):
        return _COMPILED, _DOMAIN_CUM  # the default corpus, exactly as it always was
    if n_domains < len(DOMAINS):
        names = DOMAINS[:n_domains]
        return _COMPILED[:n_domains], _cumulative([DOMAIN_SPECS[d]["weight"] for d in names])
    from rerank.corpus.skills import skill_specs

    skills = skill_specs(n_domains - len(DOMAINS), seed)
    compiled = _COMPILED + tuple(_compile_domain(name, spec) for name, spec in skills.items())
    weights = [DOMAIN_SPECS[d]["weight"] for d in DOMAINS] + [spec["weight"] for spec in skills.values()]
    return compiled, _cumulative(weights)


def _records(n: int, seed: int, n_dev: int, n_test: int, domains: tuple[_Domain, ...] = _COMPILED,
             domain_cum: tuple[float, ...] = _DOMAIN_CUM) -> Iterator[dict]:
    rng = Random(seed)
    # A separate stream, so that the text does not depend on the split sizes.
    split_rng = Random(f"rerank.synthetic.partition:{seed}")
    rand, split_rand = rng.random, split_rng.random
    devices = DEVICES
    noise = NOISE_RATE
    dev_left, test_left = n_dev, n_test
    for i in range(n):
        dom = domains[bisect_right(domain_cum, rand())]
        device = devices[bisect_right(dom.device_cum, rand())]
        tpl = dom.templates[bisect_right(dom.template_cum, rand())]
        values = [cat[int(rand() * len(cat))] for cat in tpl.catalogs]
        if rand() < noise:
            utt, annot = _render_noisy(tpl, values, rng)
        else:
            utt = tpl.utt_fmt.format(*values)
            annot = tpl.annot_fmt.format(*values)
        # Selection sampling: exact split sizes, uniformly random positions.
        r = split_rand() * (n - i)
        if r < dev_left:
            partition = "dev"
            dev_left -= 1
        elif r < dev_left + test_left:
            partition = "test"
            test_left -= 1
        else:
            partition = "train"
        yield {
            "id": f"syn-{i:06d}",
            "locale": LOCALE,
            "partition": partition,
            "scenario": dom.name,
            "intent": tpl.intent,
            "utt": utt,
            "annot_utt": annot,
            "device": device,
        }


def generate(
    n_utterances: int = 20000,
    seed: int = 0,
    dev_fraction: float = 0.15,
    test_fraction: float = 0.15,
    n_domains: int = len(DOMAINS),
) -> list[dict]:
    """All records of :func:`iter_records` as a list (use the iterator for millions)."""
    return list(iter_records(n_utterances, seed, dev_fraction, test_fraction, n_domains))


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Write ``records`` one JSON object a line; readers never see a half-written file.

    The lines go to a temporary file in the destination's directory, which
    then replaces ``path`` in one ``os.replace``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            dumps = json.dumps
            for record in records:
                f.write(dumps(record, ensure_ascii=False))
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        # mkstemp's 0600 suits secrets, not a corpus other tools must read.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
