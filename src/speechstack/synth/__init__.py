"""Synthetic demo datasets spoken by espeak-ng, in the layouts of real competitions."""

from speechstack.synth.emotion import generate_crema_d, generate_ravdess
from speechstack.synth.espeak import Espeak, english_voices, variants_by_gender
from speechstack.synth.sentiment import generate_sentiment
from speechstack.synth.speech_commands import generate_speech_commands

__all__ = [
    "Espeak",
    "english_voices",
    "generate_crema_d",
    "generate_ravdess",
    "generate_sentiment",
    "generate_speech_commands",
    "variants_by_gender",
]
