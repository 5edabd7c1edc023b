"""Settings: defaults, validation, and one-sentence errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import engine_spec
from bot.config import DEFAULT_MODEL, StartupError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith(("LEXICON_", "DISCORD_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_match_the_contract() -> None:
    """With nothing set, settings take the documented defaults."""
    settings = load_settings()
    assert settings.model == DEFAULT_MODEL == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert settings.data_dir == Path("./data")
    assert (settings.device, settings.queue, settings.dev_guild) == ("auto", "local", None)
    assert settings.log_level == "INFO"
    assert settings.sizes == [(512, 512), (512, 768), (768, 512)]


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Values come from the environment, and from .env in the working directory."""
    (tmp_path / ".env").write_text("LEXICON_MODEL=tiny\nLEXICON_DEV_GUILD=42\n")
    monkeypatch.setenv("LEXICON_DEVICE", "CUDA:1")
    monkeypatch.setenv("LEXICON_ALLOWED_SIZES", "64x64, 512x512")
    settings = load_settings()
    assert settings.model == "tiny"
    assert settings.dev_guild == 42
    assert settings.device == "cuda:1"
    assert settings.sizes == [(64, 64), (512, 512)]


@pytest.mark.parametrize("model", ["tiny", "tiny-sdxl"])
def test_the_tiny_models_default_to_their_native_sizes(
    monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    """On a tiny test model the sizes offered are its own, unless the operator chose some."""
    monkeypatch.setenv("LEXICON_MODEL", model)
    assert load_settings().sizes == [(64, 64), (128, 128)]
    monkeypatch.setenv("LEXICON_ALLOWED_SIZES", "512x512")
    assert load_settings().sizes == [(512, 512)]


def assert_one_sentence(fragment: str) -> None:
    """Loading settings fails with one line that starts with `fragment` and ends the sentence."""
    with pytest.raises(StartupError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(fragment)
    assert "\n" not in message and message.endswith(".")


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("LEXICON_DEVICE", "gpu0", "LEXICON_DEVICE is invalid: use auto, cpu, cuda"),
        ("LEXICON_QUEUE", "amqp://x", "LEXICON_QUEUE is invalid: use local, or a Redis URL"),
        ("LEXICON_DEV_GUILD", "my-server", "LEXICON_DEV_GUILD is invalid"),
        ("LEXICON_ALLOWED_SIZES", "500x500", "LEXICON_ALLOWED_SIZES is invalid: '500x500'"),
        ("LEXICON_MAX_QUEUED_PER_USER", "0", "LEXICON_MAX_QUEUED_PER_USER is invalid"),
        ("LEXICON_LOG_LEVEL", "LOUD", "LEXICON_LOG_LEVEL is invalid"),
    ],
)
def test_invalid_values_give_one_sentence(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    """A wrong value names its variable in a single line that ends the sentence."""
    monkeypatch.setenv(variable, value)
    assert_one_sentence(fragment)


def test_two_kinds_of_cuda_graphs_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile's reduce-overhead mode records graphs itself: not on top of Lexicon's."""
    monkeypatch.setenv("LEXICON_COMPILE", "reduce-overhead")
    with pytest.raises(StartupError, match=r"^LEXICON_CUDA_GRAPHS is invalid: LEXICON_COMPILE="):
        load_settings()
    monkeypatch.setenv("LEXICON_CUDA_GRAPHS", "false")
    settings = load_settings()
    assert settings.compile == "reduce-overhead" and settings.cuda_graphs is False


def test_cuda_graphs_are_on_by_default() -> None:
    assert load_settings().cuda_graphs is True


def test_compile_is_on_by_default_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """LEXICON_COMPILE defaults to `default` (cached under the data dir); `off` turns it off."""
    assert load_settings().compile == "default"
    monkeypatch.setenv("LEXICON_COMPILE", "off")
    assert load_settings().compile == "off"


def test_the_vae_float32_setting_reaches_the_worker_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """LEXICON_VAE_FLOAT32 is off by default (SDXL's VAE in bfloat16 where the GPU computes it)
    and, once set, travels to the worker in its engine spec."""
    assert load_settings().vae_float32 is False
    assert engine_spec(load_settings()).vae_float32 is False
    monkeypatch.setenv("LEXICON_VAE_FLOAT32", "true")
    assert engine_spec(load_settings()).vae_float32 is True


def test_missing_token_says_where_to_get_one() -> None:
    """require_discord_token names DISCORD_TOKEN and the developer portal."""
    with pytest.raises(StartupError) as caught:
        load_settings().require_discord_token()
    assert "DISCORD_TOKEN" in str(caught.value)
    assert "discord.com/developers/applications" in str(caught.value)


def test_token_is_secret_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The token never appears when settings are printed or logged."""
    monkeypatch.setenv("DISCORD_TOKEN", "not-a-real-token-but-secret")
    settings = load_settings()
    assert "not-a-real-token-but-secret" not in repr(settings)
    assert settings.require_discord_token() == "not-a-real-token-but-secret"


def test_models_are_named_pairs_and_the_first_is_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LEXICON_MODELS lists name=source pairs in order; the first is the deployment default."""
    monkeypatch.setenv("LEXICON_MODELS", "sd15=/models/sd15, anime=/ckpt/anything-v3.safetensors")
    settings = load_settings()
    assert [(m.name, m.source) for m in settings.models] == [
        ("sd15", "/models/sd15"),
        ("anime", "/ckpt/anything-v3.safetensors"),
    ]
    assert settings.default_model == "sd15"
    assert settings.worker_models == settings.models
    monkeypatch.setenv("LEXICON_WORKER_MODELS", "anime")
    assert [m.name for m in load_settings().worker_models] == ["anime"]


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("tiny", "tiny"),
        ("/models/My Model", "my-model"),
        ("/ckpt/Anything-V3.0.safetensors", "anything-v3.0"),
        (DEFAULT_MODEL, "stable-diffusion-v1-5"),
    ],
)
def test_the_one_model_is_named_after_its_source(
    monkeypatch: pytest.MonkeyPatch, source: str, name: str
) -> None:
    """With LEXICON_MODEL alone, the one model's name is its source's stem, cleaned."""
    monkeypatch.setenv("LEXICON_MODEL", source)
    settings = load_settings()
    assert [(m.name, m.source) for m in settings.models] == [(name, source)]


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ({"LEXICON_MODELS": "SD15=/m"}, "LEXICON_MODELS is invalid: in 'SD15=/m' the name 'SD15'"),
        ({"LEXICON_MODELS": "a=/m,b"}, "LEXICON_MODELS is invalid: 'b' is not name=source"),
        ({"LEXICON_MODELS": "a=/m,a=/n"}, "LEXICON_MODELS is invalid: 'a=/n' repeats the name"),
        (
            {"LEXICON_MODELS": "a=/m", "LEXICON_MODEL": "tiny"},
            "LEXICON_MODEL and LEXICON_MODELS are both set",
        ),
        (
            {"LEXICON_MODELS": "a=/m", "LEXICON_WORKER_MODELS": "b"},
            "LEXICON_WORKER_MODELS names 'b', which is not a configured model; use some of a",
        ),
    ],
)
def test_bad_models_give_one_sentence(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], fragment: str
) -> None:
    """A bad pair, a repeated name, both settings or an unknown worker model: one sentence."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert_one_sentence(fragment)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", None), ("20GiB", 20 * 1024**3), ("512 MiB", 512 * 1024**2), ("8GB", 8 * 10**9)],
)
def test_worker_model_memory_reads_sizes(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: int | None
) -> None:
    """LEXICON_WORKER_MODEL_MEMORY takes auto or a size with binary or decimal units."""
    monkeypatch.setenv("LEXICON_WORKER_MODEL_MEMORY", value)
    settings = load_settings()
    assert settings.worker_model_memory == expected
    assert engine_spec(settings).model_memory == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("lots", "LEXICON_WORKER_MODEL_MEMORY is invalid: use auto, or a size such as 20GiB"),
        ("10", "LEXICON_WORKER_MODEL_MEMORY is invalid: give the models at least 1MiB"),
    ],
)
def test_bad_worker_model_memory_gives_one_sentence(
    monkeypatch: pytest.MonkeyPatch, value: str, fragment: str
) -> None:
    """A size that is not one, or too small to hold a model: one sentence with the fix."""
    monkeypatch.setenv("LEXICON_WORKER_MODEL_MEMORY", value)
    assert_one_sentence(fragment)
