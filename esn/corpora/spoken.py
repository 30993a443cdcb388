"""A spoken emotional-prosody corpus: sentences with neutral content, spoken by espeak-ng (`esn.speech`).

The words never carry the emotion: every sentence below is written to be emotionally flat, and each
emotion is rendered through prosody only (pitch level and range, speaking rate, loudness, pauses between
words). Speakers are espeak-ng voices (accents) × variants (voice timbres) with their own pitch, range and
rate, so emotion has to be told apart from speaker. The intensity knob and the channels (studio,
telephone) are those of the synthetic corpus (`esn.corpora.synthetic`). Every clip is drawn from a
generator seeded by (seed, utterance id): the corpus is identical for the same options on any machine.

With `content="conflict"` the words do carry an emotion (`EMOTIONAL_SENTENCES`): every sentence whose words say
emotion A is spoken with the prosody of every emotion B, congruent pairs (A = B) included, so a model's answer
shows which cue it follows. The clip's `emotion` is then the prosodic one (what the default corpora label) and
`lexical_emotion` the one the words say; both reach the manifest (`esn.prepare`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esn.corpora.base import Candidate, reader
from esn.corpora.synthetic import apply_channel, blend, check_channel_intensity
from esn.emotions import FOUR_CLASSES, check_emotions
from esn.speech import RATE, clip_settings, speak

#: Emotionally neutral content, written here: plain statements about objects, places and routines.
SENTENCES: tuple[str, ...] = (
    "The train leaves the station at nine in the morning.",
    "Please put the blue folder on the table by the window.",
    "The library closes at six on weekdays.",
    "We bought three boxes of paper and a new pen.",
    "The meeting has been moved to the second floor.",
    "My brother lives in a small town near the coast.",
    "The bus stops at the corner of the main street.",
    "She wrote the numbers down in a green notebook.",
    "The kitchen has a white door and two windows.",
    "He usually walks to work along the river.",
    "The report is due at the end of the month.",
    "There are seven chairs in the waiting room.",
    "The shop sells bread, milk and fresh vegetables.",
    "They painted the fence on Saturday afternoon.",
    "The keys are in the drawer under the desk.",
    "Our office is next to the post office.",
    "The plane lands at half past four.",
    "I put the letters in the box by the door.",
    "The garden is behind the old brick house.",
    "We will need a ladder to reach the top shelf.",
    "The museum opens again on Monday morning.",
    "He parked the car in front of the bank.",
    "The printer is on the desk in the corner.",
    "Take the second road on the left after the bridge.",
    "The tea is in the cupboard above the sink.",
    "She reads the newspaper before breakfast.",
    "The school is a short walk from the park.",
    "The lamp on the desk needs a new bulb.",
    "We moved the table closer to the wall.",
    "The water boils after a few minutes.",
    "The store on the left sells hardware and paint.",
    "The class starts at ten and ends at noon.",
    "Turn off the lights when you leave the room.",
    "The map is in the glove box of the car.",
    "The clock in the hall shows the wrong time.",
    "He is carrying two bags of apples to the car.",
    "The documents are in the folder on the shelf.",
    "The ferry crosses the lake every hour.",
    "The window in the bedroom faces the street.",
    "We keep the bicycles in the garage.",
)

#: Sentences whose words say an emotion, written here (plain first-person statements), for cue-conflict clips.
#: The neutral ones are neutral content as above.
EMOTIONAL_SENTENCES: dict[str, tuple[str, ...]] = {
    "neutral": SENTENCES[:6],
    "happy": (
        "I am so happy we won the game.",
        "This is the best day of my whole life.",
        "What a wonderful gift, thank you so much.",
        "I love this place, it always makes me smile.",
        "We did it, and I could not be more delighted.",
        "Your good news made me really glad today.",
    ),
    "sad": (
        "I miss her so much since she passed away.",
        "Nothing will ever be the same without him.",
        "I feel so lonely and tired of everything.",
        "We lost our old dog last night.",
        "I cried all evening after the bad news.",
        "It breaks my heart to say goodbye.",
    ),
    "angry": (
        "This makes me absolutely furious.",
        "How dare you lie to me again.",
        "I am sick and tired of your excuses.",
        "Get out of my room right now.",
        "Stop wasting my time with this nonsense.",
        "I hate it when people treat me like this.",
    ),
}
#: What a spoken clip's words are: neutral content, or words of one emotion spoken with another's prosody.
CONTENTS = ("neutral", "conflict")


@dataclass(frozen=True)
class SpokenProsody:
    """How an emotion moves a speaker's espeak-ng settings."""

    pitch: float         # + espeak-ng pitch points (0-100 scale) over the speaker's own
    range_factor: float  # × the speaker's pitch range
    rate_factor: float   # × the speaker's words per minute
    gain_db: float       # loudness, dB relative to the speaker's volume
    word_gap: float      # pause between words, 10 ms units


#: Directions from the acoustic-correlate literature (Scherer 2003), as the synthetic corpus: happy and
#: surprise high and wide, sad low, narrow, slow and quiet with pauses, angry loud and fast, fear high
#: and fast with a narrow range, disgust low and slow.
PROSODY: dict[str, SpokenProsody] = {
    "neutral": SpokenProsody(0.0, 1.00, 1.00, 0.0, 0.0),
    "happy": SpokenProsody(16.0, 1.70, 1.10, 3.0, 0.0),
    "sad": SpokenProsody(-14.0, 0.35, 0.72, -6.0, 4.0),
    "angry": SpokenProsody(6.0, 1.25, 1.22, 7.0, 0.0),
    "fear": SpokenProsody(20.0, 0.70, 1.30, -1.0, 1.0),
    "disgust": SpokenProsody(-8.0, 1.10, 0.82, 1.0, 2.0),
    "surprise": SpokenProsody(22.0, 2.00, 1.00, 4.0, 0.0),
}

#: espeak-ng voices (accents of English) and variants (timbres) whose combinations are the speakers.
VOICES: tuple[str, ...] = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc")
VARIANTS: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")


@dataclass(frozen=True)
class SpokenSpeaker:
    id: str
    voice: str
    variant: str
    pitch: float   # espeak-ng pitch 0-100
    range: float   # espeak-ng pitch range 0-100
    rate: float    # words per minute
    volume: float  # espeak-ng amplitude


def make_speakers(n: int, seed: int, prefix: str = "spk", voices: tuple[str, ...] = VOICES,
                  variants: tuple[str, ...] = VARIANTS) -> list[SpokenSpeaker]:
    """`n` distinct (voice, variant) pairs in a seeded order, each with its own pitch, range and rate."""
    pairs = [(v, w) for v in voices for w in variants]
    if n > len(pairs):
        raise ValueError(f"spoken corpus: {n} speakers requested, only {len(pairs)} voice × variant pairs")
    rng = np.random.default_rng([seed, 11])
    order = rng.permutation(len(pairs))[:n]
    return [SpokenSpeaker(f"{prefix}{i:02d}", *pairs[j], pitch=float(rng.uniform(40, 60)),
                          range=float(rng.uniform(40, 60)), rate=float(rng.uniform(160, 185)),
                          volume=float(rng.uniform(55, 70)))
            for i, j in enumerate(order)]


def render(text: str, emotion: str, speaker: SpokenSpeaker, rng: np.random.Generator,
           intensity: float = 1.0) -> tuple[np.ndarray, dict[str, int]]:
    """`text` spoken by `speaker` with `emotion`'s prosody at `intensity`; the samples and espeak-ng's settings."""
    p = blend(PROSODY["neutral"], PROSODY[emotion], intensity)
    settings = clip_settings({
        "pitch": speaker.pitch + p.pitch + rng.uniform(-3, 3),
        "pitch_range": speaker.range * p.range_factor * rng.uniform(0.9, 1.1),
        "rate": speaker.rate * p.rate_factor * rng.uniform(0.95, 1.05),
        "volume": speaker.volume * 10.0 ** (p.gain_db / 20.0),
        "word_gap": p.word_gap,
    })
    wave = speak(text, speaker.voice, speaker.variant, **settings)
    return np.clip(wave, -1.0, 1.0).astype(np.float32), settings


@reader("spoken")
def read_spoken(root: Path | None = None, *, emotions: list[str] | tuple[str, ...] = FOUR_CLASSES,
                speakers: int = 24, per_speaker_emotion: int = 8, seed: int = 0,
                intensity: tuple[float, float] = (1.0, 1.0), channel: str = "studio", speaker_prefix: str = "spk",
                voices: list[str] | tuple[str, ...] = VOICES,
                variants: list[str] | tuple[str, ...] = VARIANTS, content: str = "neutral") -> Iterator[Candidate]:
    """Yield the spoken corpus; `root` is ignored (nothing is read from disk).

    Options as the synthetic corpus (`intensity`, `channel`, `speaker_prefix`), plus the espeak-ng
    `voices` and `variants` whose pairs make the speakers. Each clip speaks one of `SENTENCES`; with
    `content="conflict"`, `per_speaker_emotion` sentences per speaker and (lexical, prosodic) pair instead
    (`cue_conflict_clips`).
    """
    emotions = check_emotions(list(emotions), "spoken corpus emotions")
    low, high = check_channel_intensity("spoken", channel, intensity)
    if content not in CONTENTS:
        raise ValueError(f"spoken corpus: content must be one of {CONTENTS}, not {content!r}")
    if content == "conflict":
        yield from cue_conflict_clips(emotions, speakers, per_speaker_emotion, seed, (low, high), channel,
                                      speaker_prefix, tuple(voices), tuple(variants))
        return
    for speaker in make_speakers(speakers, seed, speaker_prefix, tuple(voices), tuple(variants)):
        for emotion in emotions:
            for k in range(per_speaker_emotion):
                uid = f"{speaker.id}_{emotion}_{k:03d}"
                rng = np.random.default_rng([seed, zlib.crc32(uid.encode())])
                strength = float(rng.uniform(low, high))
                text = SENTENCES[int(rng.integers(len(SENTENCES)))]
                wave, settings = render(text, emotion, speaker, rng, strength)
                wave = apply_channel(wave, channel, rng)
                yield Candidate(uid, (wave, RATE), emotion, speaker.id, raw_label=emotion,
                                extra={"text": text, "voice": speaker.voice, "variant": speaker.variant,
                                       "intensity": strength if emotion != "neutral" else 0.0, **settings})


def cue_conflict_clips(emotions: list[str], speakers: int, per_pair: int, seed: int, intensity: tuple[float, float],
                       channel: str, speaker_prefix: str, voices: tuple[str, ...], variants: tuple[str, ...]
                       ) -> Iterator[Candidate]:
    """Each speaker's `per_pair` sentences per lexical emotion A, each spoken with every emotion B's prosody.

    The sentence is drawn per (speaker, A, k), so within a speaker the same words are heard with every prosody:
    the pairs of a lexical row differ in prosody only. Utterance ids read `<speaker>_w<A>_p<B>_<k>`.
    """
    missing = [e for e in emotions if e not in EMOTIONAL_SENTENCES]
    if missing:
        raise ValueError(f"spoken corpus, content conflict: no emotional sentences for {missing} "
                         f"(written for {sorted(EMOTIONAL_SENTENCES)})")
    low, high = intensity
    for speaker in make_speakers(speakers, seed, speaker_prefix, voices, variants):
        for lexical in emotions:
            for k in range(per_pair):
                pick = np.random.default_rng([seed, zlib.crc32(f"{speaker.id}_w{lexical}_{k:03d}".encode())])
                text = EMOTIONAL_SENTENCES[lexical][int(pick.integers(len(EMOTIONAL_SENTENCES[lexical])))]
                for prosodic in emotions:
                    uid = f"{speaker.id}_w{lexical}_p{prosodic}_{k:03d}"
                    rng = np.random.default_rng([seed, zlib.crc32(uid.encode())])
                    strength = float(rng.uniform(low, high))
                    wave, settings = render(text, prosodic, speaker, rng, strength)
                    wave = apply_channel(wave, channel, rng)
                    yield Candidate(uid, (wave, RATE), prosodic, speaker.id, raw_label=prosodic,
                                    extra={"text": text, "lexical_emotion": lexical, "voice": speaker.voice,
                                           "variant": speaker.variant,
                                           "intensity": strength if prosodic != "neutral" else 0.0, **settings})
