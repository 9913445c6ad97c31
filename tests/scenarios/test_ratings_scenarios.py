"""Scenarios calibrated from rating data: readers, bad input, the fit, the
cache, and the `movielens` / `ratings_csv` environments."""

import pathlib

import numpy as np
import pytest
from scipy import stats
from tf_agents.environments import utils as env_utils

from tests.conftest import REPO_ROOT
import lerl_recsim
from lerl_recsim import evaluation, results
from lerl_recsim.agents import scripted_policies
from lerl_recsim.scenarios import calibration_cache
from lerl_recsim.scenarios import category_groups, exit_rules, factorisation
from lerl_recsim.scenarios import ratings_data

MOVIELENS_DIR = (REPO_ROOT / ".." / "shared" /
                 "data" / "ml-latest-small").resolve()
needs_movielens = pytest.mark.skipif(
    not (MOVIELENS_DIR / "ratings.csv").is_file(),
    reason=f"MovieLens ml-latest-small not found at {MOVIELENS_DIR} "
    "(../shared/data/ml-latest-small from the repository root)")
# Documented in docs/movielens.md: measured 0.8145 with the default
# parameters; predicting the mean gives 1.012, a bias-only model 0.838.
MOVIELENS_RMSE_BOUND = 0.85

GENERIC = dict(ratings_file="feedback.csv", categories_file="items.csv",
               user_column="uid", item_column="iid", value_column="score",
               category_item_column="iid", category_column="tags",
               category_separator=";")


def write(path: pathlib.Path, text: str) -> pathlib.Path:
  path.write_text(text)
  return path


def movielens_dir(tmp_path: pathlib.Path, ratings: str, movies: str) -> pathlib.Path:
  write(tmp_path / "ratings.csv", ratings)
  write(tmp_path / "movies.csv", movies)
  return tmp_path


GOOD_RATINGS = ("userId,movieId,rating,timestamp\n"
                "1,10,4.0,1\n1,20,3.5,2\n2,10,5,3\n2,30,1.0,4\n3,40,2,5\n")
GOOD_MOVIES = ('movieId,title,genres\n'
               '10,"Heat, The (1995)",Action|Crime|Thriller\n'
               '20,Toy Story (1995),Animation|Children|Comedy\n'
               '30,Casino (1995),Crime|Drama\n'
               '40,Unknown (2000),(no genres listed)\n'
               '50,Never Rated (2001),Drama\n')


def read_movielens(directory: pathlib.Path) -> ratings_data.RatingsData:
  paths = ratings_data.data_paths(ratings_data.MOVIELENS, directory)
  return ratings_data.read_ratings(*paths, ratings_data.MOVIELENS)


def test_movielens_reader_reindexes_and_keeps_multi_label_categories(tmp_path):
  data = read_movielens(movielens_dir(tmp_path, GOOD_RATINGS, GOOD_MOVIES))
  assert data.user_ids == ("1", "2") and data.item_ids == ("10", "20", "30")
  np.testing.assert_array_equal(data.users, [0, 0, 1, 1])
  np.testing.assert_array_equal(data.items, [0, 1, 0, 2])
  np.testing.assert_allclose(data.values, [4.0, 3.5, 5.0, 1.0])
  # Crime labels two items; the rest one each, ordered by name.
  assert data.category_names == ("Crime", "Action", "Animation", "Children",
                                 "Comedy", "Drama", "Thriller")
  heat = dict(zip(data.category_names, data.item_categories[0]))
  assert {n for n, v in heat.items() if v} == {"Action", "Crime", "Thriller"}
  assert data.item_categories.sum(axis=1).tolist() == [3, 3, 2]
  # "(no genres listed)" drops item 40 with its rating (and so user 3).
  assert data.uncategorised_items == 1


def test_generic_reader_with_own_columns_separator_and_delimiter(tmp_path):
  write(tmp_path / "feedback.csv", "score\tiid\tuid\n1\ta\tu1\n0\tb\tu1\n1\tb\tu2\n")
  write(tmp_path / "items.csv", "tags\tiid\nnews;sport\ta\nsport\tb\nmusic\tc\n")
  data_format = ratings_data.DataFormat(**GENERIC, delimiter="\t")
  data = ratings_data.read_ratings(
      *ratings_data.data_paths(data_format, tmp_path), data_format)
  assert data.category_names == ("sport", "news")  # music: never rated
  np.testing.assert_array_equal(data.item_categories, [[1, 1], [1, 0]])
  np.testing.assert_array_equal(data.values, [1, 0, 1])


def test_filters_repeat_until_both_thresholds_hold():
  # Item 2 has 2 ratings; dropping it leaves user 1 with 1 rating, so user 1
  # goes too, and then item 1 falls to 2 ratings: a k-core, not one pass.
  users = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3], np.int32)
  items = np.array([0, 1, 3, 1, 2, 0, 1, 3, 0, 3, 2], np.int32)
  data = ratings_data.RatingsData(
      user_ids=("a", "b", "c", "d"), item_ids=("w", "x", "y", "z"),
      users=users, items=items, values=np.ones(11, np.float32),
      category_names=("p", "q"),
      item_categories=np.array([[1, 0], [1, 0], [0, 1], [1, 0]], np.float32))
  kept = ratings_data.filter_min_counts(data, 2, 3, "test")
  assert kept.user_ids == ("a", "c", "d") and kept.item_ids == ("w", "z")
  assert kept.category_names == ("p",)  # q only labelled the dropped item
  assert kept.num_ratings == 6 and kept.users.max() == 2


BAD_MOVIELENS_INPUT = [
    ("userId,movie,rating\n1,10,4\n", GOOD_MOVIES,
     r"ratings.csv, line 1 \(header\): no column 'movieId' for the item; found "
     r"columns \['userId', 'movie', 'rating'\]"),
    (GOOD_RATINGS, "movieId,title,genre\n10,x,Action\n",
     r"movies.csv, line 1 \(header\): no column 'genres' for the category"),
    ("userId,movieId,rating\n1,10,4\n1,99,3\n", GOOD_MOVIES,
     r"ratings.csv, line 3: item '99' is unknown to .*movies.csv \(column "
     r"'movieId'\); every rated item needs a row"),
    (GOOD_RATINGS, "movieId,title,genres\n10,x,\n",
     r"movies.csv, line 2, column 'genres': empty category list for item "
     r"'10'; expected one or more category names separated by '\|', or "
     r"'\(no genres listed\)' for none"),
    (GOOD_RATINGS, "movieId,title,genres\n10,x,Action||Crime\n",
     r"movies.csv, line 2, column 'genres': empty category name in "
     r"'Action\|\|Crime'"),
    ("userId,movieId,rating\n1,10,4\n2,10,good\n", GOOD_MOVIES,
     r"ratings.csv, line 3, column 'rating': 'good' is not a rating; expected "
     r"a finite number"),
    ("userId,movieId,rating\n1,10,nan\n", GOOD_MOVIES,
     r"ratings.csv, line 2, column 'rating': 'nan' is not a rating"),
    ("userId,movieId,rating\n1,10,4\n,20,3\n", GOOD_MOVIES,
     r"ratings.csv, line 3, column 'userId': empty id"),
    ("userId,movieId,rating\n1,10\n", GOOD_MOVIES,
     r"ratings.csv, line 2: 2 field\(s\); expected at least 3"),
    (GOOD_RATINGS, GOOD_MOVIES + "20,again,Drama\n",
     r"movies.csv, line 7: item '20' is listed again \(first on line 3\)"),
    ("", GOOD_MOVIES, r"ratings.csv: empty file; expected a header row"),
    ("userId,movieId,rating\n1,40,4\n", GOOD_MOVIES,
     r"ratings.csv: no ratings of categorised items"),
]


@pytest.mark.parametrize("ratings, movies, message", BAD_MOVIELENS_INPUT)
def test_bad_input_names_file_line_or_column(tmp_path, ratings, movies, message):
  with pytest.raises(ValueError, match=message):
    read_movielens(movielens_dir(tmp_path, ratings, movies))


def test_bad_input_never_reaches_the_cache(tmp_path):
  directory = movielens_dir(tmp_path, "userId,movieId,rating\n1,10,x\n",
                            GOOD_MOVIES)
  cache = tmp_path / "cache"
  with pytest.raises(ValueError, match="'x' is not a rating"):
    lerl_recsim.make_env("movielens", data_dir=str(directory),
                         cache_dir=str(cache))
  assert not cache.exists() or not any(cache.iterdir())


def test_filters_that_leave_nothing_say_so(tmp_path):
  directory = movielens_dir(tmp_path, GOOD_RATINGS, GOOD_MOVIES)
  with pytest.raises(ValueError, match=(
      r"ratings.csv: no ratings are left after filtering to users with >= 20 "
      r"and items with >= 20 ratings \(before: 2 users, at most 2 ratings "
      r"each; 3 items, at most 2 ratings each\); lower min_user_ratings")):
    lerl_recsim.make_env("movielens", data_dir=str(directory),
                         cache_dir=str(tmp_path / "cache"))


def test_missing_data_names_the_files_and_grouplens(tmp_path, monkeypatch):
  monkeypatch.delenv(ratings_data.DATA_DIR_VARIABLE, raising=False)
  with pytest.raises(FileNotFoundError, match=(
      r"pass data_dir=.* or set \$LERL_DATA_DIR to a directory holding "
      r"ratings.csv \(columns userId, movieId, rating\) and movies.csv "
      r"\(columns movieId, genres\). MovieLens is published by GroupLens at "
      r"https://grouplens.org/datasets/movielens/")):
    lerl_recsim.make_env("movielens")
  with pytest.raises(FileNotFoundError, match=(
      r"data directory '.*nowhere' \(from data_dir\) does not exist; it must "
      r"hold ratings.csv .*grouplens.org/datasets/movielens")):
    lerl_recsim.make_env("movielens", data_dir=str(tmp_path / "nowhere"))
  monkeypatch.setenv(ratings_data.DATA_DIR_VARIABLE, str(tmp_path / "gone"))
  with pytest.raises(FileNotFoundError, match=r"\(from \$LERL_DATA_DIR\)"):
    lerl_recsim.make_env("movielens")
  write(tmp_path / "ratings.csv", GOOD_RATINGS)
  with pytest.raises(FileNotFoundError, match=(
      r"movies.csv: file not found; expected ratings.csv .* and movies.csv "
      r".* in .*grouplens")):
    lerl_recsim.make_env("movielens", data_dir=str(tmp_path))


@pytest.mark.parametrize("kwargs, message", [
    ({"num_items": 100}, "num_items is set by the data in scenario 'movielens'"),
    ({"min_item_ratings": 0}, r"min_item_ratings=0 is out of range"),
    ({"colour": "blue"}, r"unknown override\(s\) \['colour'\] for scenario "
                         r"'movielens'; accepted: .*'data_dir'"),
    ({"num_groups": 0}, "num_groups must be an int >= 1"),
])
def test_bad_calibration_overrides_are_named(kwargs, message):
  with pytest.raises((ValueError, TypeError), match=message):
    lerl_recsim.make_env("movielens", data_dir=str(MOVIELENS_DIR), **kwargs)


def test_ratings_csv_needs_its_files():
  with pytest.raises(ValueError, match=(
      r"scenario 'ratings_csv' needs \['ratings_file', 'categories_file'\]")):
    lerl_recsim.make_env("ratings_csv")


def synthetic_dataset(directory: pathlib.Path, seed: int = 0) -> pathlib.Path:
  """60 users rate 40 items with a low-rank taste; items carry 1-3 of 6 tags."""
  rng = np.random.default_rng(seed)
  taste = rng.normal(size=(60, 3)) @ rng.normal(size=(3, 40))
  tags = ["news", "sport", "music", "film", "games", "food"]
  rows = ["uid,iid,score"]
  for user in range(60):
    for item in rng.choice(40, 25, replace=False):
      score = np.clip(np.round(3 + taste[user, item]), 1, 5)
      rows.append(f"u{user},i{item},{score}")
  write(directory / "feedback.csv", "\n".join(rows) + "\n")
  lines = ["iid,tags"]
  for item in range(40):
    chosen = rng.choice(6, 1 + item % 3, replace=False)
    lines.append(f"i{item},{';'.join(tags[c] for c in chosen)}")
  write(directory / "items.csv", "\n".join(lines) + "\n")
  return directory


def ratings_csv_env(directory: pathlib.Path, **overrides):
  options = dict(num_users=8, seed=3, data_dir=str(directory),
                 cache_dir=str(directory / "cache"), min_user_ratings=5,
                 min_item_ratings=5, num_factors=4, num_groups=3, **GENERIC)
  options.update(overrides)
  return lerl_recsim.make_env("ratings_csv", **options)


def test_ratings_csv_config_records_data_fit_and_error(tmp_path):
  env = ratings_csv_env(synthetic_dataset(tmp_path))
  config = env.config
  assert config["scenario"] == "ratings_csv"
  data = config["data"]
  assert data["ratings_path"] == str(tmp_path / "feedback.csv")
  assert data["ratings_sha256"] == calibration_cache.file_sha256(
      tmp_path / "feedback.csv")
  assert data["category_column"] == "tags" and data["category_separator"] == ";"
  assert config["calibration"]["min_item_ratings"] == 5
  assert config["calibration"]["num_factors"] == 4
  results = config["calibration_results"]
  assert 0.0 < results["heldout_rmse"] < results["baseline_rmse"]
  assert results["num_items"] == env.scenario.items.num_items == 40
  assert len(config["catalogue"]["groups"]) == 3
  # Multi-label items reach the scenario as multi-hot categories.
  assert set(env.scenario.items.categories.sum(axis=1)) == {1.0, 2.0, 3.0}


def test_engagement_spans_the_unit_interval(tmp_path):
  env = ratings_csv_env(synthetic_dataset(tmp_path), num_users=64)
  env.reset()
  engagement = env.expected_engagement()
  assert engagement.min() < 0.1 and engagement.max() > 0.8


EXIT_RULE_SETTINGS = [("satisfaction", {}), ("temper", {}), ("kuaisim", {}),
                      ("category_window", {"preset": "dorl"}), ("budget", {})]


def test_exit_rule_settings_cover_every_rule():
  assert {rule for rule, _ in EXIT_RULE_SETTINGS} == set(exit_rules.EXIT_RULES)


@pytest.mark.parametrize("rule, params", EXIT_RULE_SETTINGS)
def test_every_exit_rule_works_on_calibrated_scenarios(tmp_path, rule, params):
  env = ratings_csv_env(synthetic_dataset(tmp_path), exit_rule=rule,
                        exit_params=params, max_session_length=15)
  env_utils.validate_py_environment(
      env, episodes=4,
      observation_and_action_constraint_splitter=lerl_recsim.splitter)


def test_second_build_reads_the_cache_instead_of_refitting(tmp_path, monkeypatch):
  directory = synthetic_dataset(tmp_path)
  first = ratings_csv_env(directory)
  entries = list((directory / "cache").iterdir())
  assert len(entries) == 1 and entries[0].suffix == ".npz"
  written = entries[0].stat().st_mtime_ns

  def refit(*args, **kwargs):
    raise AssertionError("refitted although the cache holds this calibration")

  monkeypatch.setattr(factorisation, "fit", refit)
  second = ratings_csv_env(directory)
  assert entries[0].stat().st_mtime_ns == written
  assert second.config == first.config
  np.testing.assert_array_equal(second.scenario.items.features,
                                first.scenario.items.features)
  # Other parameters or other data: another entry, so a fit.
  with pytest.raises(AssertionError, match="refitted"):
    ratings_csv_env(directory, num_factors=3)
  with open(directory / "feedback.csv", "a") as stream:
    stream.write("u0,i39,5\n")
  with pytest.raises(AssertionError, match="refitted"):
    ratings_csv_env(directory)


def test_unreadable_cache_entry_is_reported_and_left_alone(tmp_path):
  directory = synthetic_dataset(tmp_path)
  ratings_csv_env(directory)
  (entry,) = (directory / "cache").iterdir()
  entry.write_bytes(b"half-written")
  with pytest.raises(results.DamagedFileError,
                     match=rf"{entry.name} is damaged .* remove it to fit"):
    ratings_csv_env(directory)
  assert entry.read_bytes() == b"half-written"
  entry.unlink()  # as the message says
  assert ratings_csv_env(directory).config["catalogue"]


def test_groups_file_sets_the_semantic_groups(tmp_path):
  directory = synthetic_dataset(tmp_path)
  groups = write(tmp_path / "groups.csv",
                 "category,group\nnews,info\nsport,leisure\nmusic,culture\n"
                 "film,culture\ngames,leisure\nfood,leisure\nunused,info\n")
  env = ratings_csv_env(directory, groups_file=str(groups))
  catalogue = env.scenario.catalogue
  assert sorted(catalogue.group_names) == ["culture", "info", "leisure"]
  assert catalogue.group_of(catalogue.index("film")) == "culture"
  assert env.config["catalogue"]["grouping"]["from"] == str(groups)
  write(groups, "category,group\nnews,info\n")
  with pytest.raises(ValueError, match=r"groups.csv: no group for categories "
                     r"\[.*'sport'.*\]; expected a row for every category"):
    ratings_csv_env(directory, groups_file=str(groups))
  write(groups, "name,group\nnews,info\n")
  with pytest.raises(ValueError, match=r"groups.csv, line 1 \(header\): no "
                     r"column 'category'"):
    ratings_csv_env(directory, groups_file=str(groups))


def test_cooccurrence_groups_join_categories_that_label_the_same_items():
  # a & b always together, c & d always together, e alone.
  table = np.array([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0],
                    [0, 0, 1, 1, 0], [0, 0, 0, 0, 1], [1, 0, 0, 0, 0]],
                   np.float32)
  catalogue = category_groups.cooccurrence_groups("abcde", table, 3)
  assert catalogue.group_names == ("a/b", "c/d", "e")
  np.testing.assert_array_equal(catalogue.category_group, [0, 0, 1, 1, 2])


def test_categories_that_never_share_an_item_are_not_grouped(caplog):
  # One category per item: nothing to group by; each is its own group.
  single = np.eye(6, dtype=np.float32)
  with caplog.at_level("WARNING"):
    catalogue = category_groups.cooccurrence_groups("abcdef", single, 3)
  assert catalogue.group_names == tuple("abcdef")
  np.testing.assert_array_equal(catalogue.category_group, range(6))
  assert "formed 6 semantic groups of the 6 categories, not 3" in caplog.text
  # a & b share items; c, d, e share none with anything: 4 groups, not 2.
  table = np.array([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 1, 0, 0],
                    [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]], np.float32)
  catalogue = category_groups.cooccurrence_groups("abcde", table, 2)
  assert catalogue.group_names == ("a/b", "c", "d", "e")


def test_group_names_stay_short():
  assert category_groups.group_name(list("wxyz")) == "w/x/y/z"
  assert category_groups.group_name(list("pqrstu")) == "p/q/r/s +2 more"
  # Five categories always together form one group with a short name.
  together = np.ones((4, 5), np.float32)
  catalogue = category_groups.cooccurrence_groups("vwxyz", together, 1)
  assert catalogue.group_names == ("v/w/x/y +1 more",)


@pytest.fixture(scope="module")
def movielens_cache(tmp_path_factory):
  if not (MOVIELENS_DIR / "ratings.csv").is_file():
    pytest.skip(f"MovieLens ml-latest-small not found at {MOVIELENS_DIR}")
  return str(tmp_path_factory.mktemp("movielens_cache"))


def test_als_half_step_solves_each_rows_weighted_ridge_by_hand():
  # One factor, regularisation 0.5 per rating. Row 0 rated items with
  # factors 1 and -1 (residuals 3 and 1): normal equations 3·I · [p, b] =
  # [2, 4], so [2/3, 4/3]. Row 1 rated nothing: zeros. Row 2 rated one item
  # of factor 2 (residual 4): [[4.5, 2], [2, 1.5]] · [p, b] = [8, 4], so
  # [4, 2] / 2.75.
  factors, bias = factorisation._solve_side(
      rows=np.array([2, 0, 0]), cols=np.array([2, 0, 1]),
      residual=np.array([4.0, 3.0, 1.0]), num_rows=3,
      other_factors=np.array([[1.0], [-1.0], [2.0]]), regularisation=0.5)
  np.testing.assert_allclose(factors[:, 0], [2 / 3, 0.0, 4 / 2.75])
  np.testing.assert_allclose(bias, [4 / 3, 0.0, 2 / 2.75])


def movielens_env(cache: str, **overrides):
  options = dict(num_users=8, seed=5, data_dir=str(MOVIELENS_DIR),
                 cache_dir=cache)
  options.update(overrides)
  return lerl_recsim.make_env("movielens", **options)


@needs_movielens
def test_movielens_heldout_rmse_is_within_the_documented_bound(movielens_cache):
  env = movielens_env(movielens_cache)
  results = env.config["calibration_results"]
  assert results["heldout_rmse"] < MOVIELENS_RMSE_BOUND
  assert results["heldout_rmse"] < results["baseline_rmse"] - 0.15
  assert (results["num_users"], results["num_items"]) == (566, 1286)
  assert results["uncategorised_items"] == 34
  assert env.config["data"]["ratings_sha256"].startswith("aa289ca8")
  assert env.scenario.catalogue.num_categories == 19
  assert len(env.scenario.catalogue.group_names) == 8


@needs_movielens
def test_movielens_passes_validate_py_environment(movielens_cache):
  env_utils.validate_py_environment(
      movielens_env(movielens_cache), episodes=5,
      observation_and_action_constraint_splitter=lerl_recsim.splitter)


@needs_movielens
def test_movielens_data_dir_may_come_from_the_environment_variable(
    movielens_cache, monkeypatch):
  monkeypatch.setenv(ratings_data.DATA_DIR_VARIABLE, str(MOVIELENS_DIR))
  env = lerl_recsim.make_env("movielens", num_users=4, cache_dir=movielens_cache)
  assert env.config["data"]["ratings_path"] == str(MOVIELENS_DIR / "ratings.csv")


@needs_movielens
def test_movielens_rewards_diversity_over_greed(movielens_cache):
  env = movielens_env(movielens_cache, num_users=200)
  results = {name: evaluation.evaluate_sessions(
      env, scripted_policies.SCRIPTED_POLICIES[name](env, seed=5))
             for name in ("random", "best_category", "diversifying", "oracle")}
  step = {name: r["step_reward"] for name, r in results.items()}
  length = {name: r["interaction_length"] for name, r in results.items()}
  total = {name: r["cumulative_reward"] for name, r in results.items()}
  assert step["best_category"].mean() > step["random"].mean()
  assert stats.ttest_ind(step["best_category"], step["random"],
                         equal_var=False).pvalue < 1e-3
  assert length["diversifying"].mean() > 1.5 * length["best_category"].mean()
  assert total["diversifying"].mean() > total["best_category"].mean()
  assert step["oracle"].mean() > max(step[n].mean() for n in step
                                     if n != "oracle")


@needs_movielens
@pytest.mark.parametrize("agent", ["lerl", "dqn"])
def test_agents_train_on_movielens(agent, movielens_cache, tmp_path):
  from lerl_recsim.experiments import run_config, train
  run = run_config.RunConfig(
      agent=agent, scenario="movielens", planner="heuristic", num_users=8,
      num_iterations=4, num_eval_sessions=10, eval_interval=4,
      checkpoint_interval=4, log_interval=4,
      scenario_overrides={"data_dir": str(MOVIELENS_DIR),
                          "cache_dir": movielens_cache})
  summary = train.train_eval(run, str(tmp_path / agent))
  assert summary["num_sessions"] == 10
  assert summary["config"]["scenario"]["scenario"] == "movielens"
  assert summary["config"]["scenario"]["num_items"] == 1286
  assert (tmp_path / agent / "policy" / "saved_model.pb").exists()
