"""Synthetic demo datasets spoken by espeak-ng, in the layouts of real competitions."""

from speechstack.synth.espeak import Espeak, english_voices
from speechstack.synth.speech_commands import generate_speech_commands

__all__ = ["Espeak", "english_voices", "generate_speech_commands"]
