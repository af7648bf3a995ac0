"""What a configuration can do, decided before any weights load (smoothgen_exp.checks): combinations of
components, items, outputs, labels and attack objectives that cannot work fail in one line, and every
shipped combination passes."""

import pytest

from smoothgen_exp.config import CONF_DIR
from smoothgen_exp.errors import SmoothgenError

from .test_config import composed


@pytest.mark.parametrize(("overrides", "message"), [
    (["certifier=decoding"], r"certifier=decoding: needs a model with token-averaged decoding .* "
                             r"model=digits_t2i \(DigitsT2I\) has none"),
    (["aggregator=token_average"], r"aggregator=token_average: needs a model with token-averaged decoding"),
    (["model=tiny_gpt2", "aggregator=mean"], r"aggregator=mean: needs a model with tensor outputs .* "
                                             r"model=tiny_gpt2 \(CausalLM\)"),
    (["model=tiny_gpt2", "certifier=feature"], r"certifier=feature: needs an oracle with output features"),
    (["oracle=refusal"], r"metrics=digits: needs an oracle with output features, and oracle=refusal"),
    (["model=tiny_gpt2", "certifier=output_bound"], r"certifier=output_bound: needs a model with tensor outputs"),
    (["model=tiny_gpt2", "metrics=digits"], r"metrics=digits: needs a model with tensor outputs"),
    (["metrics=text"], r"metrics=text: needs a model with text outputs"),
    # center's distances: between tensor outputs (metric=l2) or the oracle's features (found by review:
    # an AttributeError mid-run on a language model)
    (["model=tiny_gpt2", "certifier=center"], r"certifier=center: needs a model with tensor outputs .* "
                                              r"model=tiny_gpt2 \(CausalLM\) has none"),
    (["model=tiny_gpt2", "certifier=center", "certifier.metric=feature"],
     r"certifier=center: needs an oracle with output features, and oracle=refusal"),
    # equivalence puts every answer in class 0: cohen "certified" it at the largest radius (found by review)
    (["model=tiny_gpt2", "oracle=equivalence"], r"certifier=cohen: certifies a class, and oracle=equivalence has "
                                                r"none \(every output is class 0\); use certifier=semantic"),
    (["model=tiny_gpt2", "oracle=equivalence", "certifier=sequential"], r"certifier=sequential: certifies a class"),
    # attack objectives the model cannot answer: these failed after the weights loaded (a VAE trained 85 s)
    (["attack=semantic", "model=tiny_vae"], r"attack=semantic: edits prompts, and model=tiny_vae is conditioned "
                                            r"on images; use a model conditioned on prompts"),
    (["model=smollm2", "attack=photoguard", "attack.objective=flip"],      # clamped an embedding into [0, 1]
     r"attack=photoguard: edits images, and model=smollm2 is conditioned on prompts"),
    (["model=dcgan_faces", "attack=pgd"], r"attack.objective=flip: needs an oracle with classes, and oracle=none "
                                          r"puts every output in class 0 .*; use attack.objective=distance$"),
    (["model=tiny_gpt2", "certifier=semantic", "oracle=equivalence", "attack=pgd"],
     r"oracle=equivalence puts every output in class 0 .*; use an oracle with classes"),
    (["model=tiny_gpt2", "attack=pgd", "attack.objective=event", "dataset.path=PROMPTS_ONLY"],
     r"attack.objective=event: P\(class != label\) needs labels, and dataset=harmful_prompts has none"),
    # a noise law fitted from the generator's Jacobian, on a model without gradients: a traceback (image review)
    (["model=tiny_sd", "smoothing=calibrated"], r"smoothing=calibrated: needs a model with gradients through the "
                                                 r"generator \(its Jacobian\), and model=tiny_sd \(StableDiffusion\) has none"),
    (["model=tiny_llava", "smoothing=adaptive"], r"smoothing=adaptive: needs a model with gradients"),
    (["model=tiny_gpt2", "smoothing=calibrated"], r"smoothing=calibrated: needs a model with gradients .* "
                                                  r"model=tiny_gpt2 \(CausalLM\) has none"),   # strings (diff review)
    # an oracle given outputs it does not read
    (["model=tiny_gpt2", "oracle=digit_classifier", "dataset=digits_prompts"],
     r"oracle=digit_classifier: classifies images, and model=tiny_gpt2 outputs text"),
    (["dataset=robot_commands", "oracle=answers", "metrics=none"], r"oracle=answers: classifies text, and "
                                                                    r"model=digits_t2i outputs images"),
    (["attack=photoguard"], r"attack=photoguard \(attack.objective=latent\): needs a model that reconstructs its "
                            r"input, a VAE \(model=tiny_vae or sd_vae\), and model=digits_t2i does not"),
    (["model=tiny_gpt2", "attack=pgd", "attack.objective=distance"],
     r"attack.objective=distance: model=tiny_gpt2 outputs text, which has no output space to move in"),
    (["model=tiny_gpt2", "attack=pgd", "attack.target=1"], r"attack.target: a language model's answer is attacked "
                                                           r"untargeted"),
    # a symmetric objective from x: its gradient on the baseline is zero there, so the baseline never moved
    # while the smoothed generator did (attack review)
    (["model=tiny_vae", "attack=photoguard", "attack.objective=distance"],
     r"attack=photoguard \(attack.objective=distance\): this objective is at its least at x, .*; set "
     r"attack.random_start=true$"),
    (["attack=pgd", "attack.objective=feature", "attack.random_start=false"], r"attack.random_start=true$"),
    # a smoothed event needs eval_n > log2(1 / eval_alpha) votes to be decided at all (diff review)
    (["attack=pgd", "attack.objective=event", "attack.eval_n=9"],
     r"attack.eval_n=9: even 9 of 9 votes off the label cannot show P\(event\) > 1/2 at attack.eval_alpha=0.001, "
     r"so the smoothed event could never succeed; use attack.eval_n >= 10$"),
    # a white-box attack on a labels-only oracle: one-hot labels have no gradient (a RuntimeError after
    # certifying; attack review)
    (["model=tiny_gpt2", "attack=pgd", "attack.objective=event"],
     r"attack=pgd \(attack.objective=event\): follows the gradient of class probabilities, and oracle=refusal "
     r"gives labels only \(no gradient\); use a query attack \(attack=nes or random_search\) or attack.objective=flip$"),
    # a target class the oracle lacks: an IndexError traceback after setup (new-user review)
    (["attack=pgd", "attack.target=12"], r"attack.target=12: oracle=digit_classifier has classes 0..9 \(zero, one, "
                                         r"two, three, \.\.\.\)$"),
    # the answers oracle reads a dataset's canonical answers (it failed at load, after the model's weights)
    (["model=smollm2", "dataset=digits_prompts"], r"oracle=answers: needs a dataset with canonical answers "
                                                  r"\(qa_facts, robot_commands\), and dataset=digits_prompts"),
    # items of another kind than the model reads: a prompt model encoded "heldout digit image 0" as a prompt,
    # a VAE given prompts failed mid-run with a TypeError
    (["dataset=digits_images"], r"model=digits_t2i: generates from prompts, and dataset=digits_images holds "
                                r"images; use dataset=digits_prompts$"),   # the prompts whose labels fit its oracle
    (["model=tiny_gpt2", "dataset=digits_images"], r"holds images; use dataset=harmful_prompts$"),
    (["model=tiny_vae", "dataset=digits_prompts"], r"model=tiny_vae: generates from images, and "
                                                   r"dataset=digits_prompts holds prompts; use dataset=digits_images$"),
    (["dataset=gan_latents", "oracle=none", "certifier=distribution", "metrics=none"],
     r"dataset=gan_latents holds latent seeds"),
    # labels that index other classes than the oracle's: accuracy compared unrelated classes
    (["dataset=qa_facts", "metrics=none"], r"dataset=qa_facts: its labels index the classes \(Paris, Berlin, Rome, "
                                           r"Madrid, \.\.\. 118 in all\), and oracle=digit_classifier classifies "
                                           r"into \(zero, one, two, three, \.\.\. 10 in all\)"),
    (["model=smollm2", "dataset=robot_commands", "oracle=actions"],
     r"dataset=robot_commands: its labels index the classes \(move forward, move backward, .*oracle=actions "
     r"classifies into \(move left, move right, move forward"),
    (["model=tiny_gpt2", "dataset=qa_facts"], r"oracle=refusal classifies into \(complies, refuses\)"),
    (["model=tiny_sd", "oracle.classes=[one,zero,two,three,four,five,six,seven,eight,nine]"],
     r"dataset=digits_prompts: .*oracle=tiny_clip_zero_shot classifies into \(one, zero, two"),
])
def test_components_that_do_not_fit_fail_in_one_line_before_loading(overrides, message, tmp_path):
    """A new user's combinations that ended in AttributeError or KeyError tracebacks after setup."""
    from smoothgen_exp.checks import check_before_loading
    from smoothgen_exp.config import compose_overrides
    from smoothgen_exp.errors import ConfigError

    (tmp_path / "prompts.csv").write_text("prompt\nHello.\n")                  # PROMPTS_ONLY: no labels
    overrides = [o.replace("PROMPTS_ONLY", str(tmp_path / "prompts.csv")) for o in overrides]
    with pytest.raises(ConfigError, match=message) as err:
        check_before_loading(compose_overrides(overrides, hydra_config=True))   # names Hydra's options
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_and_model_default_fits(experiment):
    """The capability check refuses none of the shipped combinations: each experiment, and each model
    with the groups it presets."""
    from smoothgen_exp.checks import check_before_loading

    check_before_loading(composed(f"experiment={experiment}"))
    if experiment == "attacks":                      # once: every model option with its own presets
        for model in sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")):
            check_before_loading(composed(f"model={model}"))


def test_labels_that_index_the_oracles_classes_or_no_labels_fit(tmp_path):
    """The label check compares names, not counts: the canonical answers of robot_commands with
    oracle=answers, refusal labels with either refusal oracle, and a CSV without a label column with any
    oracle (its items have no labels)."""
    from smoothgen_exp.checks import check_before_loading

    unlabelled = tmp_path / "prompts.csv"
    unlabelled.write_text("prompt\nMove forward.\n")
    for overrides in (["model=smollm2", "dataset=robot_commands"], ["model=tiny_gpt2", "oracle=llm_judge"],
                      # numerals name the digits too (ints were an AttributeError, strings a refusal; review)
                      ["model=tiny_sd", "oracle.classes=[0,1,2,3,4,5,6,7,8,9]"],
                      ["model=tiny_sd", "oracle.classes=['0','1','2','3','4','5','6','7','8','9']"],
                      ["model=tiny_gpt2", "oracle=actions", f"dataset.path={unlabelled}"]):
        check_before_loading(composed(*overrides))


def test_a_sequential_target_above_the_ceiling_is_refused_before_loading_where_the_noise_scale_is_known():
    """gaussian and adaptive (sigma * max_scale) know their scale from the config: refused before loading.
    calibrated's is known once it is fitted on the calibration split: checked then (certified_ceiling)."""
    from smoothgen_exp.checks import checked_certifier
    from smoothgen_exp.config import compose_overrides
    from smoothgen_exp.errors import ConfigError

    for law in ("gaussian", "adaptive"):
        with pytest.raises(ConfigError, match=r"^certifier.target_radius=50: above the largest radius"):
            checked_certifier(compose_overrides(["certifier=sequential", f"smoothing={law}", "certifier.target_radius=50"]))
    assert checked_certifier(compose_overrides(["certifier=sequential", "smoothing=calibrated",
                                                "certifier.target_radius=50"])).target_radius == 50


def test_a_table_too_large_for_memory_is_refused_before_loading():
    """give_up=table and sequential_bayes at n = 10^5 (the default p* = Phi(1)) would design above MAX_TABLE entries:
    refused in one line before loading (it was after the run directory); give_up=auto predicts there."""
    from smoothgen_exp.checks import checked_certifier
    from smoothgen_exp.config import compose_overrides

    for overrides, who in ((["certifier=sequential", "certifier.give_up=table"], r"certifier.give_up=table"),
                           (["certifier=sequential_bayes"], r"sequential_bayes")):
        with pytest.raises(SmoothgenError, match=rf"^{who}: designing the table for n=100000 at p\*=0.8413 takes .* "
                                                 r"entries, above 60,000,000; use a smaller certifier.n or "):
            checked_certifier(compose_overrides([*overrides, "certifier.n=100000"]))
    assert checked_certifier(compose_overrides(["certifier=sequential", "certifier.n=100000"])).n == 100_000
    assert checked_certifier(compose_overrides(["certifier=sequential_bayes", "certifier.n=10000"])).n == 10_000


def test_the_confidence_refusal_names_only_the_alphas_the_configuration_has():
    """aggregator=mean has no alpha, center no oracle_error_alpha (diff review: both were named)."""
    from smoothgen_exp.checks import checked_certifier
    from smoothgen_exp.config import compose_overrides
    from smoothgen_exp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\(1 minus the sum of certifier.alpha, certifier.oracle_error_alpha\); "
                                          r"lower certifier.alpha or certifier.oracle_error_alpha$"):
        checked_certifier(compose_overrides(["aggregator=mean", "certifier.alpha=0.3", "certifier.oracle_error=0.01",
                                             "certifier.oracle_error_alpha=0.3"]))
    with pytest.raises(ConfigError, match=r"\(1 minus the sum of certifier.alpha, aggregator.alpha\); lower "
                                          r"certifier.alpha or aggregator.alpha$"):
        checked_certifier(compose_overrides(["certifier=center", "certifier.alpha=0.45", "aggregator.alpha=0.1"]))
